"""Built-in datasets; importing this package registers them in `benchmarks.registry.DATASETS`."""
from benchmarks.data.datasets import embedded, files, wilds_data  # noqa: F401
