"""Built-in datasets; importing this package registers them in `benchmarks.registry.DATASETS`."""
from benchmarks.datasets import embedded  # noqa: F401

# Loaders of file-based datasets (CIFAR, ImageNet, Clothing-1M, WILDS) are optional while in progress.
for _name in ("files", "wilds_data"):
    try:
        __import__(f"benchmarks.datasets.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"benchmarks.datasets.{_name}":
            raise
del _name
