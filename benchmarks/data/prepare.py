"""Prepare a dataset's archives once, before any sweep: `python -m benchmarks.data.prepare imagenet ROOT`.

ImageNet: ROOT/ILSVRC2012_img_train.tar becomes ROOT/train/<wnid>/*.JPEG and ROOT/ILSVRC2012_img_val.tar
becomes ROOT/val/<wnid>/*.JPEG (labelled by ROOT/ILSVRC2012_devkit_t12.tar.gz), each archive md5-checked and
extracted by torchvision's own functions into a `.partial` folder that is renamed when complete, so an
interrupted run is never mistaken for data. Folders that exist already are left as they are. Trials never
extract anything: eight of them extracting into one folder delete each other's files.
"""
from __future__ import annotations

import argparse
import os
import shutil

from benchmarks.cli import bad_input_exits
from benchmarks.data.datasets.common import DataMissingError

PROG = "benchmarks.data.prepare"


def prepare_imagenet(root: str) -> list[str]:
    """Extract the train and val archives of ROOT that have no folder yet; returns what was done."""
    from torchvision.datasets.imagenet import parse_train_archive, parse_val_archive

    from benchmarks.data.datasets.files import DEVKIT, TRAIN_TAR, VAL_TAR, imagenet_meta
    done = []
    for split, tar in (("train", TRAIN_TAR), ("val", VAL_TAR)):
        final, partial = os.path.join(root, split), os.path.join(root, f"{split}.partial")
        if os.path.isdir(final):
            done.append(f"{final}: present, left as it is")
            continue
        if not os.path.isfile(os.path.join(root, tar)):
            raise DataMissingError(f"dataset 'imagenet': neither {final} nor {os.path.join(root, tar)} exists")
        if split == "val" and not os.path.isfile(os.path.join(root, DEVKIT)):
            raise DataMissingError(f"dataset 'imagenet': labelling {tar} needs {os.path.join(root, DEVKIT)}")
        shutil.rmtree(partial, ignore_errors=True)   # an interrupted earlier run
        try:
            if split == "train":
                parse_train_archive(root, folder=f"{split}.partial")
            else:
                parse_val_archive(root, wnids=imagenet_meta(root)[1], folder=f"{split}.partial")
        except RuntimeError as exc:   # torchvision: missing or corrupted archive (md5)
            raise DataMissingError(f"dataset 'imagenet': {str(exc).splitlines()[0]}") from None
        os.rename(partial, final)
        done.append(f"{final}: extracted from {tar}")
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=["imagenet"])
    p.add_argument("root", help="the dataset root holding the archives (writable)")
    a = p.parse_args(argv)
    with bad_input_exits(PROG):
        if not os.path.isdir(a.root):
            raise DataMissingError(f"dataset '{a.dataset}': {a.root} not found")
        for line in prepare_imagenet(a.root):
            print(f"{PROG}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
