"""Registries of datasets and models (methods live in `molere.registry.METHODS`)."""
from molere.registry import Registry

DATASETS = Registry("dataset")
MODELS = Registry("model")
register_dataset = DATASETS.register
register_model = MODELS.register
