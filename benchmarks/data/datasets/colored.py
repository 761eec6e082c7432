"""Colored digits: the Colored-MNIST construction of Arjovsky et al. (2019, IRM) on scikit-learn's 8x8 digits, a
CPU-scale spurious-correlation dataset with groups (label, colour). Definition and measured properties:
docs/datasets.md ("colored_digits")."""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from benchmarks.data.datasets.embedded import SplitOptions
from molere.data import ExampleSet, TaskData
from molere.registry import register_dataset
from molere.splits import stratified_split

COLOUR_STREAM = 31   # RNG stream of the label noise and colours (beside the dataset's split seed)


def colour_images(x: torch.Tensor, colour: np.ndarray) -> torch.Tensor:
    """Grey images (N, 1, H, W) -> (N, 2, H, W) with each image in channel `colour` and zeros in the other."""
    out = torch.zeros(len(x), 2, *x.shape[2:], dtype=x.dtype)
    c = torch.as_tensor(colour, dtype=torch.long)
    out[torch.arange(len(x)), c] = x[:, 0]
    return out


def draw_colours(y: np.ndarray, agreement: float, rng: np.random.Generator) -> np.ndarray:
    """A colour (0 / 1) per label that equals the label with probability `agreement`."""
    return np.where(rng.random(len(y)) < agreement, y, 1 - y).astype(np.int64)


@register_dataset("colored_digits")
class ColoredDigits:
    """scikit-learn digits as Colored MNIST: label digit < 5 (flipped with `label_noise`), colour = the channel
    the image is in, agreeing with the label with `train_agreement` (train / val) and `test_agreement` (test);
    groups (label, colour); extra test `id`: the test images coloured as in training."""
    needs_root = False
    input_shape = (2, 8, 8)   # known before loading (the driver checks models against it)

    class Options(SplitOptions):
        test_fraction: float = Field(0.3, gt=0, lt=1, description="share of the images held out as test "
                                                                  "(stratified by digit)")
        label_noise: float = Field(0.25, ge=0, lt=0.5, description="share of the binary labels flipped, in every "
                                                                   "split (Colored MNIST: 0.25)")
        train_agreement: float = Field(0.9, ge=0, le=1, description="P(colour = label) in train and val")
        test_agreement: float = Field(0.1, ge=0, le=1, description="P(colour = label) in test (0.1: reversed)")
        id_test: bool = Field(True, description="add the extra test split `id`: the test images coloured with "
                                                "train_agreement")

    def __init__(self, options: Options):
        self.options = options

    def load(self, root: str | None, seed: int) -> TaskData:
        from sklearn.datasets import load_digits

        o = self.options
        d = load_digits()
        grey = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        rng = np.random.default_rng([o.split_seed, COLOUR_STREAM])
        clean = (d.target < 5).astype(np.int64)
        y = np.where(rng.random(len(clean)) < o.label_noise, 1 - clean, clean)
        pool, test = stratified_split(d.target, o.test_fraction, o.split_seed)
        colour = np.zeros(len(y), dtype=np.int64)
        colour[pool] = draw_colours(y[pool], o.train_agreement, rng)
        colour[test] = draw_colours(y[test], o.test_agreement, rng)
        id_colour = draw_colours(y[test], o.train_agreement, rng)

        def part(pos, col, ids):
            return ExampleSet(y[pos], x=colour_images(grey[torch.as_tensor(pos)], col), ids=ids,
                              groups=2 * y[pos] + col)

        if o.val_fraction > 0:
            tr, va = stratified_split(y[pool], o.val_fraction, o.split_seed + 1)
            tr, va = pool[tr], pool[va]
        else:
            tr, va = pool, None
        extra = {"id": part(test, id_colour, len(y) + test)} if o.id_test else {}
        info = {"label_noise": float((y != clean).mean()), "train_agreement": o.train_agreement,
                "test_agreement": o.test_agreement, "groups": "2 * label + colour"}
        return TaskData("colored_digits", part(tr, colour[tr], tr), part(test, colour[test], test), 2, (2, 8, 8),
                        val=None if va is None else part(va, colour[va], va), extra_tests=extra, info=info)
