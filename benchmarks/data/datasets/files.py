"""Datasets read from a user-given root in their official on-disk layouts: CIFAR, ImageNet, Clothing-1M."""
from __future__ import annotations

import os
import pickle

import numpy as np
from pydantic import Field, model_validator
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from benchmarks.data.datasets.common import DataMissingError, DatasetOptions, cache_dir, require_path
from benchmarks.data.datasets.images import CIFAR_MEAN, CIFAR_STD, ArrayImages, ImageFiles, RootDataset, make_sets
from molere.registry import register_dataset
from molere.config import ConfigError
from molere.data import TaskData
from molere.splits import random_subset, stratified_split


# ---- CIFAR ------------------------------------------------------------------------------------------
class _Cifar(RootDataset):
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    url = "https://www.cs.toronto.edu/~kriz/cifar.html"

    class Options(DatasetOptions):
        image_size: int = Field(32, gt=0)
        augment: bool = True
        val_fraction: float = Field(0.1, ge=0, lt=1, description="stratified hold-out of train as val")
        split_seed: int = Field(0, description="seed of the fixed val hold-out (not the trial seed)")
        download: bool = Field(False, description="download with torchvision when the network allows")

    def _how(self, root) -> str:
        return (f"download the {self.registered_name.upper()} python version from {self.url} and extract "
                f"into {root}, or set download: true")

    def check(self, root: str | None) -> None:
        require_path(root, self.registered_name, self._how(root))
        if self.options.download:
            return
        for f in self.train_files + (self.test_file, self.meta_file):
            require_path(os.path.join(root, self.folder, f), self.registered_name, self._how(root))

    def _download(self, root: str) -> None:
        from torchvision import datasets
        cls = datasets.CIFAR10 if self.num_classes == 10 else datasets.CIFAR100
        cls(root, train=True, download=True)

    def _read(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(batch[self.label_key], dtype=np.int64)

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        if o.download and root is not None:
            self._download(root)
        self.check(root)
        d = os.path.join(root, self.folder)
        parts = [self._read(os.path.join(d, f)) for f in self.train_files + (self.test_file,)]
        x = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
        y = np.concatenate([p[1] for p in parts])
        n_train = len(y) - len(parts[-1][1])
        with open(os.path.join(d, self.meta_file), "rb") as f:
            names = [n.decode() for n in pickle.load(f, encoding="bytes")[self.names_key]]
        rest, held = stratified_split(y[:n_train], o.val_fraction, o.split_seed)
        train_tf, eval_tf = self.transforms("pad", o.image_size, o.augment, CIFAR_MEAN, CIFAR_STD)
        sets = make_sets(y, (ArrayImages(x, train_tf), ArrayImages(x, eval_tf)),
                         {"train": rest, "val": held, "test": np.arange(n_train, len(y))})
        return TaskData(self.registered_name, sets["train"], sets["test"], self.num_classes,
                        (3, o.image_size, o.image_size), val=sets["val"] if len(held) else None,
                        info={"classes": names})


@register_dataset("cifar10")
class Cifar10(_Cifar):
    """CIFAR-10 from torchvision's on-disk python batches (10% of train held out as val)."""
    folder, meta_file, test_file = "cifar-10-batches-py", "batches.meta", "test_batch"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    label_key, names_key, num_classes = b"labels", b"label_names", 10


@register_dataset("cifar100")
class Cifar100(_Cifar):
    """CIFAR-100 (fine labels) from torchvision's on-disk python files (10% of train held out as val)."""
    folder, meta_file, test_file, train_files = "cifar-100-python", "meta", "test", ("train",)
    label_key, names_key, num_classes = b"fine_labels", b"fine_label_names", 100


# ---- ImageNet ---------------------------------------------------------------------------------------
DEVKIT, TRAIN_TAR, VAL_TAR = "ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"


PREPARE = "python -m benchmarks.data.prepare imagenet {root}"


def imagenet_meta(root: str) -> tuple[dict, list]:
    """(wnid -> class names, the 50,000 val wnids) of the devkit, the same as torchvision's ROOT/meta.bin.

    Read from ROOT/meta.bin when torchvision wrote one, else from a cache outside ROOT (`cache_dir`), made by
    torchvision's `parse_devkit_archive` (md5-checked) in a scratch folder and moved there atomically: ROOT is
    never written (a read-only mount works) and concurrent trials never see a partial file."""
    import hashlib
    import shutil
    import tempfile

    from torchvision.datasets.imagenet import META_FILE, load_meta_file, parse_devkit_archive
    if os.path.isfile(os.path.join(root, META_FILE)):
        return load_meta_file(root)
    devkit = os.path.realpath(os.path.join(root, DEVKIT))
    st = os.stat(devkit)
    key = hashlib.sha256(f"{devkit}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir("imagenet-meta", key)
    if not os.path.isfile(os.path.join(folder, META_FILE)):
        os.makedirs(folder, exist_ok=True)
        scratch = tempfile.mkdtemp(dir=folder)
        try:
            os.symlink(devkit, os.path.join(scratch, DEVKIT))
            parse_devkit_archive(scratch)
            os.replace(os.path.join(scratch, META_FILE), os.path.join(folder, META_FILE))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return load_meta_file(folder)


def folder_kind(folder: str) -> str:
    """'classes' when `folder` has sub-folders, 'flat' when it holds image files directly, else 'empty'."""
    flat = False
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir():
                return "classes"
            flat = flat or e.name.lower().endswith(IMG_EXTENSIONS)
    return "flat" if flat else "empty"


def _scan(folder: str, class_to_idx: dict[str, int], what: str) -> list[tuple[str, int]]:
    """Images of an ImageFolder tree whose class folders must be a subset of `class_to_idx`."""
    unknown = sorted(set(e.name for e in os.scandir(folder) if e.is_dir()) - set(class_to_idx))
    if unknown:
        raise ConfigError(f"{what}: class folders {unknown[:5]} in {folder} are not ImageNet train classes")
    items = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not items:
        raise DataMissingError(f"dataset 'imagenet': no images in {folder}; expected {folder}/<wnid>/*.JPEG")
    return items


def class_subset(folder: str, class_to_idx: dict[str, int]) -> list[int]:
    """The class indices of the class folders of an ImageFolder tree (ImageNet-R / -A: 200 wnids)."""
    return sorted(class_to_idx[e.name] for e in os.scandir(folder) if e.is_dir() and e.name in class_to_idx)


@register_dataset("imagenet")
class ImageNet(RootDataset):
    """ImageNet-1K (official val = test) in ImageFolder layout or the raw ILSVRC layout with the devkit,
    optional wnid-subset extra test sets (ImageNet-R / -A, scored on their classes)."""
    how = ("download ILSVRC2012 from https://image-net.org and arrange it as ROOT/train/<wnid>/*.JPEG and "
           "ROOT/val/<wnid>/*.JPEG, "
           f"or keep the raw layout: ROOT/{DEVKIT} with ROOT/train/<wnid>/ and a flat ROOT/val/*.JPEG (the "
           f"archives {TRAIN_TAR} / {VAL_TAR} extracted once with `{PREPARE.format(root='ROOT')}`)")

    class Options(DatasetOptions):
        image_size: int = Field(224, gt=0)
        augment: bool = True
        val_fraction: float = Field(0.02, ge=0, lt=1, description="stratified hold-out of train as val")
        split_seed: int = 0
        extra_tests: dict[str, str] = Field(default_factory=dict,
                                            description="name -> ImageFolder root with wnid class folders")
        val_source: str | None = Field(None, description="an extra_tests name partitioned into val + test")
        val_source_fraction: float = Field(0.5, gt=0, lt=1)
        subset_classes: bool = Field(True, description="score each extra test set on the classes of its folders "
                                                       "(ImageNet-R / -A: their 200 classes, logits masked)")

        @model_validator(mode="after")
        def _val_source_known(self):
            if self.val_source is not None and self.val_source not in self.extra_tests:
                raise ValueError(f"val_source must be one of the extra_tests names {sorted(self.extra_tests)}")
            reserved = {"train", "val", "test"} & set(self.extra_tests)
            if reserved:
                raise ValueError(f"extra_tests names must not be {sorted(reserved)}")
            return self

    def val_shift(self) -> str | None:
        """An extra set as val (ImageNet-R / -A) is another distribution than train (None: val is from train)."""
        o = self.options
        return None if o.val_source is None else f"half of the extra test set {o.val_source!r} (another distribution)"

    def _fail(self, path: str, expected: str, root) -> None:
        raise DataMissingError(f"dataset {self.registered_name!r}: {path}: expected {expected}; "
                               f"{self.how.replace('ROOT', str(root))}")

    def check(self, root: str | None) -> None:
        """The layout (ImageFolder or raw ILSVRC with the devkit) is complete; one line naming what is wrong."""
        require_path(root, self.registered_name, self.how.replace("ROOT", str(root)))
        devkit = os.path.exists(os.path.join(root, DEVKIT))
        for split, tar in (("train", TRAIN_TAR), ("val", VAL_TAR)):
            folder = os.path.join(root, split)
            if os.path.isdir(folder):
                kind = folder_kind(folder)
                if kind == "empty":
                    self._fail(folder, "class folders <wnid>/ with images (it is empty)", root)
                if kind == "flat" and (split == "train" or not devkit):
                    self._fail(folder, f"class folders <wnid>/ (it holds images directly; the raw flat val/ needs "
                               f"{os.path.join(root, DEVKIT)} to label them)", root)
            elif os.path.exists(os.path.join(root, tar)):   # trials never extract: 8 of them would race
                raise DataMissingError(f"dataset 'imagenet': {folder} not found, only the archive "
                                       f"{os.path.join(root, tar)}; extract it once, before the sweep: "
                                       f"{PREPARE.format(root=root)}")
            else:
                self._fail(folder, "an ImageFolder tree", root)
        if devkit:
            try:   # once, in the driver: torchvision verifies the devkit; the parsed metadata is cached
                imagenet_meta(root)
            except (RuntimeError, OSError, KeyError, ValueError) as exc:
                self._fail(os.path.join(root, DEVKIT), f"the official devkit, readable "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0]})", root)
        for name, path in self.options.extra_tests.items():
            require_path(path, "imagenet", f"extra_tests.{name} must be an ImageFolder root with wnid folders")

    def _items(self, root: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
        """wnids and the (path, class) items of train and official val, from either layout."""
        train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
        wnids = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())   # torchvision's ImageNet order
        class_to_idx = {w: i for i, w in enumerate(wnids)}
        train = _scan(train_dir, class_to_idx, "imagenet")
        if folder_kind(val_dir) != "flat":
            return wnids, {"train": train, "test": _scan(val_dir, class_to_idx, "imagenet")}
        files = sorted(f for f in os.listdir(val_dir) if f.lower().endswith(IMG_EXTENSIONS))
        val_wnids = imagenet_meta(root)[1]   # raw val: sorted files <-> the devkit's labels
        if len(files) != len(val_wnids):
            raise DataMissingError(f"dataset 'imagenet': {val_dir}: expected the {len(val_wnids)} validation "
                                   f"images the devkit labels, found {len(files)}")
        return wnids, {"train": train, "test": [(os.path.join(val_dir, f), class_to_idx[w])
                                                for f, w in zip(files, val_wnids)]}

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        self.check(root)
        wnids, items_of = self._items(root)
        class_to_idx = {w: i for i, w in enumerate(wnids)}
        # one combined file list: train, official val (our test), then extra sets by name
        blocks = {name: o.extra_tests[name] for name in sorted(o.extra_tests)}
        paths, labels, parts, subsets = [], [], {}, {}
        for name in ("train", "test", *blocks):
            if name in blocks:
                items = _scan(blocks[name], class_to_idx, f"extra_tests.{name}")
                if o.subset_classes:
                    subsets[name] = class_subset(blocks[name], class_to_idx)
            else:
                items = items_of[name]
            parts[name] = np.arange(len(paths), len(paths) + len(items))
            paths += [p for p, _ in items]
            labels += [c for _, c in items]
        labels = np.asarray(labels, dtype=np.int64)
        if o.val_source is not None:
            pos = parts[o.val_source]
            rest, held = stratified_split(labels[pos], o.val_source_fraction, o.split_seed)
            parts[o.val_source], parts["val"] = pos[rest], pos[held]
            if o.val_source in subsets:
                subsets["val"] = subsets[o.val_source]
        elif o.val_fraction > 0:
            pos = parts["train"]
            rest, held = stratified_split(labels[pos], o.val_fraction, o.split_seed)
            parts["train"], parts["val"] = pos[rest], pos[held]
        train_tf, eval_tf = self.transforms("crop", o.image_size, o.augment)
        sets = make_sets(labels, (ImageFiles(paths, train_tf), ImageFiles(paths, eval_tf)), parts)
        extras = {name: sets[name] for name in o.extra_tests}
        return TaskData(self.registered_name, sets["train"], sets["test"], len(wnids), (3, o.image_size, o.image_size),
                        val=sets.get("val"), extra_tests=extras,
                        info={"classes": wnids, "val_source": o.val_source or "train",
                              "subset_classes": {k: len(v) for k, v in subsets.items()}},
                        class_subsets={k: v for k, v in subsets.items() if len(v) < len(wnids)})


# ---- Clothing-1M ------------------------------------------------------------------------------------
def _read_kv(path: str) -> dict[str, int]:
    with open(path) as f:
        return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


def _read_keys(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


@register_dataset("clothing1m")
class Clothing1M(RootDataset):
    """Clothing-1M: 14 classes, noisy web labels for train, clean labels for val and test."""
    files = ("noisy_label_kv.txt", "clean_label_kv.txt", "noisy_train_key_list.txt",
             "clean_val_key_list.txt", "clean_test_key_list.txt")
    how = ("request Clothing-1M from its authors (https://github.com/Cysu/noisy_label) and extract it into "
           "ROOT (the list files in ROOT/annotations/ or in ROOT itself, the images under ROOT/images/)")

    class Options(DatasetOptions):
        image_size: int = Field(224, gt=0)
        augment: bool = True
        train_subset: int | None = Field(None, gt=0, description="use a fixed random subset of this size")
        split_seed: int = 0

    def val_shift(self) -> str:
        return "Clothing-1M's clean-labelled val split (another distribution than the noisy train)"

    def annotations(self, root: str) -> str:
        """The folder holding the five list files: ROOT/annotations/ or ROOT (DataMissingError naming the gap)."""
        places = [os.path.join(root, "annotations"), root]
        for d in places:
            if all(os.path.isfile(os.path.join(d, f)) for f in self.files):
                return d
        d = next((d for d in places if any(os.path.isfile(os.path.join(d, f)) for f in self.files)), places[0])
        absent = [f for f in self.files if not os.path.isfile(os.path.join(d, f))]
        raise DataMissingError(f"dataset 'clothing1m': {os.path.join(d, absent[0])} not found; expected the list "
                               f"files {', '.join(self.files)} in {places[0]} or {root}; "
                               + self.how.replace("ROOT", root))

    def check(self, root: str | None) -> None:
        """The list files, every image they list (one directory listing per image folder) and a readable
        sample of them (decoded); DataMissingError naming the first gap."""
        require_path(root, "clothing1m", self.how.replace("ROOT", str(root)))
        ann = self.annotations(root)
        keys = sorted({k for f in self.files[2:] for k in _read_keys(os.path.join(ann, f))})
        found = set()
        for folder in {os.path.dirname(k) for k in keys}:
            if os.path.isdir(os.path.join(root, folder)):
                found.update(os.path.join(folder, name) for name in os.listdir(os.path.join(root, folder)))
        missing = [k for k in keys if k not in found]
        if missing:
            raise DataMissingError(f"dataset 'clothing1m': {len(missing)} of the {len(keys)} listed images are not "
                                   f"under {root} (first: {os.path.join(root, missing[0])}); extract the image "
                                   f"archives there; " + self.how.replace("ROOT", root))
        from PIL import Image
        for k in keys[:: max(1, len(keys) // 16)]:
            try:
                with Image.open(os.path.join(root, k)) as img:
                    img.verify()
            except Exception as exc:  # noqa: BLE001 - any unreadable image is one line
                raise DataMissingError(f"dataset 'clothing1m': {os.path.join(root, k)} is not a readable image "
                                       f"({type(exc).__name__}); re-extract the image archives") from None

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        require_path(root, "clothing1m", self.how.replace("ROOT", str(root)))   # the driver ran `check`
        ann = self.annotations(root)
        noisy, clean = (_read_kv(os.path.join(ann, f)) for f in self.files[:2])
        keys = {s: _read_keys(os.path.join(ann, f)) for s, f in zip(("train", "val", "test"), self.files[2:])}
        table = {"train": noisy, "val": clean, "test": clean}
        flat, labels, true, parts = [], [], [], {}
        for split, ks in keys.items():
            missing = [k for k in ks if k not in table[split]]
            if missing:
                raise DataMissingError(f"dataset 'clothing1m': {split} key {missing[0]} has no label in "
                                       f"{os.path.join(ann, self.files[0 if split == 'train' else 1])}")
            parts[split] = np.arange(len(flat), len(flat) + len(ks))
            flat += ks
            labels += [table[split][k] for k in ks]
            true += [clean.get(k, table[split][k]) for k in ks]
        labels, true = np.asarray(labels), np.asarray(true)
        if o.train_subset is not None and o.train_subset < len(keys["train"]):   # ids stay the full-set ones
            parts["train"] = parts["train"][random_subset(len(keys["train"]), o.train_subset, o.split_seed,
                                                          "numpy_choice")]
        tr = parts["train"]
        known = np.asarray([flat[p] in clean for p in tr], dtype=bool)
        paths = [os.path.join(root, k) for k in flat]
        train_tf, eval_tf = self.transforms("crop", o.image_size, o.augment)
        sets = make_sets(labels, (ImageFiles(paths, train_tf), ImageFiles(paths, eval_tf)), parts, true)
        noise = float((labels[tr][known] != true[tr][known]).mean()) if known.any() else float("nan")
        return TaskData("clothing1m", sets["train"], sets["test"], 14, (3, o.image_size, o.image_size),
                        val=sets["val"], info={"train_known_clean": int(known.sum()),
                                               "noise_rate_known_clean": noise})
