"""Fine-grained datasets read through torchvision's dataset classes from a user-given root, in their official
splits: FGVC-Aircraft, Stanford Cars and Oxford-IIIT Pets (the paper's "Airplane", "Cars", "Cats v/s Dogs").

torchvision parses the annotation files; the images are read lazily with the harness's transforms (or the
pretrained model's timm data config), so ids, splits and augmentation behave as for every other image
dataset. Layouts and readings: docs/datasets.md."""
from __future__ import annotations

import os
from typing import Literal

import numpy as np
from pydantic import Field

from benchmarks.data.datasets.common import DataMissingError, DatasetOptions, require_files, require_path
from benchmarks.data.datasets.images import ImageFiles, RootDataset, make_sets
from molere.registry import register_dataset
from molere.data import TaskData
from molere.splits import stratified_split

Items = list[tuple[str, int]]


def tv_root(root: str, folder: str) -> str:
    """The root torchvision expects: ROOT when ROOT/<folder> exists, its parent when ROOT is <folder> itself."""
    norm = os.path.normpath(root)
    if not os.path.isdir(os.path.join(norm, folder)) and os.path.basename(norm) == folder:
        return os.path.dirname(norm)
    return norm


class FolderOptions(DatasetOptions):
    image_size: int = Field(224, gt=0)
    augment: bool = True
    val_fraction: float = Field(0.1, ge=0, lt=1, description="stratified hold-out of the training split as val "
                                                             "(datasets without an official val split)")
    split_seed: int = Field(0, description="seed of the fixed val hold-out (not the trial seed)")


class _VisionFolder(RootDataset):
    """Base: `folder` is torchvision's sub-folder of the root; subclasses list what `check` requires in it and
    read the (path, label) items of each official split with torchvision (`_splits`)."""
    folder: str
    how: str
    Options = FolderOptions

    def required(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _splits(self, root: str) -> tuple[dict[str, Items], list[str]]:
        raise NotImplementedError

    def _how(self, root) -> str:
        return self.how.replace("ROOT", str(root))

    def check(self, root: str | None) -> None:
        """Every annotation file and image folder the official splits need exists (one line naming the first gap)."""
        require_path(root, self.registered_name, self._how(root))
        base = os.path.join(tv_root(root, self.folder), self.folder)
        for rel in self.required():
            require_path(os.path.join(base, rel), self.registered_name, self._how(root))

    def load(self, root: str | None, seed: int) -> TaskData:
        self.check(root)
        try:
            splits, classes = self._splits(tv_root(root, self.folder))
        except (RuntimeError, OSError, KeyError, ValueError) as exc:   # torchvision on a damaged layout
            raise DataMissingError(f"dataset {self.registered_name!r}: {root}: torchvision could not read it "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                   f"{self._how(root)}") from None
        return self._task(splits, classes)

    def _task(self, splits: dict[str, Items], classes: list[str]) -> TaskData:
        o = self.options
        paths, labels, parts = [], [], {}
        for name, items in splits.items():
            parts[name] = np.arange(len(paths), len(paths) + len(items))
            paths += [p for p, _ in items]
            labels += [int(c) for _, c in items]
        require_files(paths, self.registered_name, self._how("ROOT"))
        labels = np.asarray(labels, dtype=np.int64)
        if "val" not in parts and o.val_fraction > 0:
            rest, held = stratified_split(labels[parts["train"]], o.val_fraction, o.split_seed)
            parts["train"], parts["val"] = parts["train"][rest], parts["train"][held]
        train_tf, eval_tf = self.transforms("crop", o.image_size, o.augment)
        sets = make_sets(labels, (ImageFiles(paths, train_tf), ImageFiles(paths, eval_tf)), parts)
        return TaskData(self.registered_name, sets["train"], sets["test"], len(classes),
                        (3, o.image_size, o.image_size), val=sets.get("val"),
                        info={"classes": list(classes), "split_sizes": {k: len(v) for k, v in parts.items()}})


@register_dataset("fgvc_aircraft")
class FGVCAircraft(_VisionFolder):
    """FGVC-Aircraft 2013b (Maji et al. 2013, the paper's "Airplane") via torchvision: 100 variants (or 70
    families / 30 manufacturers), official train / val / test of 3,334 / 3,333 / 3,333 images."""
    folder = "fgvc-aircraft-2013b"
    how = ("download fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ and "
           "extract it into ROOT (ROOT/fgvc-aircraft-2013b/data/images/*.jpg and the images_<level>_<split>.txt "
           "lists)")

    class Options(FolderOptions):
        annotation_level: Literal["variant", "family", "manufacturer"] = Field(
            "variant", description="label granularity: variant (100 classes, the standard task), family (70) or "
                                   "manufacturer (30)")
        official_val: bool = Field(True, description="the official val split is the validation split (false: "
                                                     "train + val pooled, val_fraction of it held out)")

    def _lists(self) -> tuple[str, ...]:
        return ("train", "val") if self.options.official_val else ("trainval",)

    def required(self) -> tuple[str, ...]:
        lvl = self.options.annotation_level
        names = {"variant": "variants", "family": "families", "manufacturer": "manufacturers"}[lvl]
        return ("data/images", f"data/{names}.txt",
                *(f"data/images_{lvl}_{s}.txt" for s in (*self._lists(), "test")))

    def _splits(self, root: str) -> tuple[dict[str, Items], list[str]]:
        from torchvision.datasets import FGVCAircraft as Tv
        out, classes = {}, []
        for split in (*self._lists(), "test"):
            ds = Tv(root, split=split, annotation_level=self.options.annotation_level)
            out["train" if split == "trainval" else split] = list(zip(ds._image_files, ds._labels))
            classes = classes or ds.classes
        return out, classes


@register_dataset("stanford_cars")
class StanfordCars(_VisionFolder):
    """Stanford Cars (Krause et al. 2013) via torchvision: 196 car models, official train / test of 8,144 /
    8,041 images (test labels from cars_test_annos_withlabels.mat); val held out of train."""
    folder = "stanford_cars"
    how = ("the Stanford Cars site is offline and torchvision cannot download it; place a copy as "
           "ROOT/stanford_cars/ with cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat "
           "and the labelled test annotations cars_test_annos_withlabels.mat (torchvision's layout)")

    def required(self) -> tuple[str, ...]:
        return ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat",
                "cars_train", "cars_test")

    def _splits(self, root: str) -> tuple[dict[str, Items], list[str]]:
        from torchvision.datasets import StanfordCars as Tv
        out, classes = {}, []
        for split in ("train", "test"):
            ds = Tv(root, split=split)
            out[split], classes = list(ds._samples), classes or ds.classes
        return out, classes


@register_dataset("oxford_pets")
class OxfordPets(_VisionFolder):
    """Oxford-IIIT Pets (Parkhi et al. 2012, "Cats and Dogs"; the paper's "Cats v/s Dogs") via torchvision:
    37 breeds (or cat vs dog), official trainval / test of 3,680 / 3,669 images; val held out of trainval."""
    folder = "oxford-iiit-pet"
    how = ("download images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/ and "
           "extract both into ROOT/oxford-iiit-pet/ (images/*.jpg, annotations/trainval.txt, annotations/test.txt)")

    class Options(FolderOptions):
        label: Literal["breed", "species"] = Field(
            "breed", description="breed: the 37-way task of the dataset's paper (default); species: cat vs dog")

    def required(self) -> tuple[str, ...]:
        return ("images", "annotations/trainval.txt", "annotations/test.txt")

    def _splits(self, root: str) -> tuple[dict[str, Items], list[str]]:
        from torchvision.datasets import OxfordIIITPet as Tv
        species = self.options.label == "species"
        out, classes = {}, []
        for split in ("trainval", "test"):
            ds = Tv(root, split=split)
            labels = ds._bin_labels if species else ds._labels
            out["train" if split == "trainval" else split] = [(str(p), c) for p, c in zip(ds._images, labels)]
            classes = classes or (ds.bin_classes if species else ds.classes)
        return out, classes
