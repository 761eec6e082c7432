"""Image pipelines shared by the on-disk loaders: transforms, lazy image sources, split assembly."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from molere.data import ExampleSet

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _rgb(img: Image.Image) -> Image.Image:
    return img.convert("RGB")


def make_transforms(style: str, size: int, augment: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    crop_scale: tuple[float, float] = (0.08, 1.0)) -> tuple[T.Compose, T.Compose]:
    """(train, eval) transforms from a PIL image to a normalised tensor of side `size`.

    style "crop": random-resized-crop + flip / resize to size/0.875 + center-crop (ImageNet-like);
    "pad": pad-and-crop + flip / identity (CIFAR-like, resized first if `size` differs);
    "resize": resize to size x size, flip only when augmenting (WILDS-like).
    """
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    flip = [T.RandomHorizontalFlip()] if augment else []
    if style == "crop":
        eval_ops = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)]
        train_ops = [T.RandomResizedCrop(size, scale=crop_scale)] + flip if augment else eval_ops
    elif style == "pad":
        eval_ops = [T.Resize(size)] if size != 32 else []
        train_ops = eval_ops + ([T.RandomCrop(size, padding=max(1, size // 8))] + flip if augment else [])
    elif style == "resize":
        eval_ops = [T.Resize((size, size))]
        train_ops = eval_ops + flip
    else:
        raise ValueError(f"unknown transform style {style!r}")
    rgb = [T.Lambda(_rgb)]
    return T.Compose(rgb + train_ops + tail), T.Compose(rgb + eval_ops + tail)


def uint8_tail(transform) -> tuple:
    """(transform, (mean, std)) with a final ToTensor + Normalize replaced by PILToTensor: items stay uint8
    (a quarter of the bytes in shared and pinned memory) and are normalised on arrival on the device
    (`molere.data.Batch.to`, the same float32 values). Other pipelines are returned as they are, with None."""
    ops = list(getattr(transform, "transforms", ()))
    if len(ops) >= 2 and isinstance(ops[-1], T.Normalize) and type(ops[-2]).__name__ in ("ToTensor", "MaybeToTensor"):
        mean, std = (tuple(float(v) for v in stat) for stat in (ops[-1].mean, ops[-1].std))
        return T.Compose(ops[:-2] + [T.PILToTensor()]), (mean, std)
    return transform, None


class ArrayImages(Dataset):
    """uint8 images (N, H, W, C) kept in memory; item p is (transform(image p),), uint8 when it allows
    (`uint8_tail`; `normalize` holds the (mean, std) then)."""

    def __init__(self, images: np.ndarray, transform):
        self.images = images
        self.transform, self.normalize = uint8_tail(transform)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, p: int):
        return (self.transform(Image.fromarray(self.images[p])),)


class ImageFiles(Dataset):
    """Image files read lazily; item p is (transform(image at paths[p]),), uint8 when it allows (`uint8_tail`).
    The paths are one numpy array, not a list of str objects, so forked loader workers share its pages
    instead of copying them (reference counts)."""

    def __init__(self, paths: list[str], transform):
        self.paths = np.asarray(paths, dtype=str)
        self.transform, self.normalize = uint8_tail(transform)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, p: int):
        with Image.open(str(self.paths[p])) as img:
            return (self.transform(img.convert("RGB")),)


def timm_transforms(data_config: dict, size: int, augment: bool,
                    crop_scale: tuple[float, float] = (0.08, 1.0)) -> tuple:
    """(train, eval) transforms from a timm data config (mean, std, interpolation, crop_pct of the pretrained
    weights) via `timm.data.create_transform`, at side `size`; the dataset keeps its crop scale."""
    from timm.data import create_transform
    cfg = {**data_config, "input_size": (3, size, size)}
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    common = {k: cfg[k] for k in keys if k in cfg}
    eval_tf = create_transform(**common, is_training=False)
    train_tf = create_transform(**common, is_training=True, scale=crop_scale) if augment else eval_tf
    return train_tf, eval_tf


class RootDataset:
    """Base of datasets read from a user-given root; subclasses define `Options`, `check` and `load`.

    `data_config` (a timm data config, set by the trial for pretrained timm models) replaces the dataset's
    own transforms by the weights' (`transforms`)."""
    needs_root = True
    Options: type
    data_config: dict | None = None

    def __init__(self, options=None):
        self.options = options if options is not None else self.Options()

    def transforms(self, style: str, size: int, augment: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   crop_scale: tuple[float, float] = (0.08, 1.0)) -> tuple:
        """(train, eval): the pretrained model's (timm data config) when set, else `make_transforms`."""
        if self.data_config is not None:
            return timm_transforms(self.data_config, size, augment, crop_scale)
        return make_transforms(style, size, augment, mean, std, crop_scale)


def make_sets(labels, sources: tuple[Dataset, Dataset], parts: dict[str, np.ndarray],
              true_labels=None) -> dict[str, ExampleSet]:
    """One ExampleSet per part (positions into one combined source); ids are those positions."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    true = labels if true_labels is None else torch.as_tensor(np.asarray(true_labels), dtype=torch.long)
    out = {}
    for name, pos in parts.items():
        pos = np.asarray(pos, dtype=np.int64)
        idx = torch.from_numpy(pos)
        out[name] = ExampleSet(labels[idx], source=sources[0], positions=pos, eval_source=sources[1],
                               true_labels=true[idx], ids=idx)
    return out
