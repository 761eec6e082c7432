"""Built-in datasets; importing this package registers them in `benchmarks.registry.DATASETS`."""
from benchmarks.data.datasets import embedded, fgvc, files, imagenet100, retinopathy, wilds_data  # noqa: F401
