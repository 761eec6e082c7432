"""Baseline methods, one module each; importing this package registers them all."""
from . import bilaw, erm, fsr, gdw, jtt, l2rw, lrw, maple, mbr, mwn, rho_loss, stablenet, train_twice  # noqa: F401
