"""ImageNet-100: a 100-class subset of ImageNet-1K (by default the list of Tian et al.'s CMC, shipped with its
provenance in imagenet100.txt), read from either ImageNet layout the `imagenet` dataset reads."""
from __future__ import annotations

import os
import re

from pydantic import Field
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.datasets.files import DEVKIT, ImageNet, folder_kind, imagenet_meta
from molere.registry import register_dataset
from molere.config import ConfigError

CMC_LIST = os.path.join(os.path.dirname(__file__), "imagenet100.txt")
WNID = re.compile(r"^n\d{8}$")


def read_wnids(path: str) -> list[str]:
    """The WNIDs of a class-list file (one per line, '#' comments skipped), checked: well-formed and unique."""
    try:
        with open(path) as f:
            wnids = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise ConfigError(f"dataset.options.class_list: {path}: {exc.strerror or exc}") from None
    bad = [w for w in wnids if not WNID.match(w)]
    if bad or not wnids or len(set(wnids)) != len(wnids):
        why = f"{bad[0]!r} is not a WNID (n + 8 digits)" if bad else "no WNIDs" if not wnids else "duplicate WNIDs"
        raise ConfigError(f"dataset.options.class_list: {path}: {why}")
    return wnids


@register_dataset("imagenet100")
class ImageNet100(ImageNet):
    """ImageNet-100: the 100 ImageNet-1K classes of Tian et al.'s CMC (imagenet100.txt), from a full
    ImageNet-1K root in either layout (ImageFolder, or raw ILSVRC with the devkit) or a root holding only those
    classes; labels are the sorted WNIDs' positions; official val = test, val held out of train."""

    class Options(ImageNet.Options):
        class_list: str | None = Field(None, description="file of WNIDs, one per line (default: the shipped CMC "
                                                         "ImageNet-100 list)")

    def wnids(self) -> list[str]:
        return sorted(read_wnids(self.options.class_list or CMC_LIST))

    def check(self, root: str | None) -> None:
        """The ImageNet layout checks, then every listed class is present (its folders, or the devkit's synsets)."""
        super().check(root)
        wnids = self.wnids()
        for split in ("train", "val"):
            folder = os.path.join(root, split)
            if os.path.isdir(folder) and folder_kind(folder) == "classes":
                absent = [w for w in wnids if not os.path.isdir(os.path.join(folder, w))]
                if absent:
                    self._fail(os.path.join(folder, absent[0]), f"a folder for each of the {len(wnids)} listed "
                               f"classes ({len(absent)} missing)", root)
        if os.path.exists(os.path.join(root, DEVKIT)):
            known = imagenet_meta(root)[0]   # the devkit's synsets, ROOT never written
            absent = [w for w in wnids if w not in known]
            if absent:
                self._fail(os.path.join(root, DEVKIT), f"synsets for the listed classes ({absent[0]} and "
                           f"{len(absent) - 1} more are not ImageNet-1K classes)", root)

    def _items(self, root: str):
        wnids = self.wnids()
        class_to_idx = {w: i for i, w in enumerate(wnids)}
        if not os.path.exists(os.path.join(root, DEVKIT)):   # ImageFolder: only the listed class folders are read
            items = {name: make_dataset(os.path.join(root, split), class_to_idx, extensions=IMG_EXTENSIONS,
                                        allow_empty=True) for name, split in (("train", "train"), ("test", "val"))}
            for name, found in items.items():
                if not found:
                    raise DataMissingError(f"dataset 'imagenet100': no images of the listed classes in "
                                           f"{os.path.join(root, 'train' if name == 'train' else 'val')}")
            return wnids, items
        all_wnids, items = super()._items(root)   # raw layout: torchvision labels every image, then the subset
        remap = {i: class_to_idx[w] for i, w in enumerate(all_wnids) if w in class_to_idx}
        return wnids, {k: [(p, remap[c]) for p, c in v if c in remap] for k, v in items.items()}
