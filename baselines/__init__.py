"""Baseline methods, one module each; importing this package registers them all."""
from . import erm, fsr, l2rw, lrw, mwn, train_twice  # noqa: F401
