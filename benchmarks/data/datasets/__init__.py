"""Built-in datasets; importing this package registers them in `molere.registry.DATASETS`."""
from benchmarks.data.datasets import (  # noqa: F401
    colored, embedded, fgvc, files, imagenet100, retinopathy, shifted, wilds_data)
