"""Tiny fake copies of on-disk datasets in their real formats, for tests of the real loaders."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
from PIL import Image


def _image(rng, size: int, label: int = 0) -> Image.Image:
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    arr[..., 0] = 40 + 20 * (label % 10)            # a weak, learnable class signal
    return Image.fromarray(arr)


def _save(img: Image.Image, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)


def _pickle(obj, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_rows(rng, labels: np.ndarray) -> np.ndarray:
    return rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)


def make_fake_cifar10(root, per_class_per_batch=4, test_per_class=2, seed=0) -> str:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} as pickled byte-key dicts."""
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    for name, per in [(f"data_batch_{i}", per_class_per_batch) for i in range(1, 6)] + [("test_batch", test_per_class)]:
        y = rng.permutation(np.repeat(np.arange(10), per))
        _pickle({b"batch_label": name.encode(), b"labels": y.tolist(), b"data": _cifar_rows(rng, y),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(len(y))]}, os.path.join(d, name))
    _pickle({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": 10 * per_class_per_batch,
             b"num_vis": 3072}, os.path.join(d, "batches.meta"))
    return d


def make_fake_cifar100(root, train_per_class=5, test_per_class=1, seed=0) -> str:
    """root/cifar-100-python/{train, test, meta} with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    d = os.path.join(root, "cifar-100-python")
    os.makedirs(d, exist_ok=True)
    for name, per in (("train", train_per_class), ("test", test_per_class)):
        y = rng.permutation(np.repeat(np.arange(100), per))
        _pickle({b"filenames": [f"{i}.png".encode() for i in range(len(y))], b"fine_labels": y.tolist(),
                 b"coarse_labels": (y // 5).tolist(), b"data": _cifar_rows(rng, y)}, os.path.join(d, name))
    _pickle({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
             b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, os.path.join(d, "meta"))
    return d


WNIDS = ("n01440764", "n01443537", "n01484850")


def make_image_folder(root, counts: dict[str, int], size=16, seed=0, ext=".JPEG") -> str:
    """root/<wnid>/<wnid>_<i>.JPEG with `counts[wnid]` images per class."""
    rng = np.random.default_rng(seed)
    for c, (wnid, n) in enumerate(counts.items()):
        for i in range(n):
            _save(_image(rng, size, c), os.path.join(root, wnid, f"{wnid}_{i}{ext}"))
    return str(root)


def make_fake_imagenet(root, train_per_class=10, val_per_class=2, size=16) -> str:
    """root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG for the classes in WNIDS."""
    make_image_folder(os.path.join(root, "train"), {w: train_per_class for w in WNIDS}, size, seed=0)
    make_image_folder(os.path.join(root, "val"), {w: val_per_class for w in WNIDS}, size, seed=1)
    return str(root)


def _md5(path) -> str:
    import hashlib
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def archive_ilsvrc(root) -> dict:
    """Turn a fake raw layout into the archives only: ROOT/ILSVRC2012_img_train.tar (one <wnid>.tar per class,
    as distributed) and ROOT/ILSVRC2012_img_val.tar (the flat val images); the folders are removed. Returns
    the archives' md5s."""
    import shutil
    import tarfile
    train, val = os.path.join(root, "train"), os.path.join(root, "val")
    with tarfile.open(os.path.join(root, "ILSVRC2012_img_train.tar"), "w") as outer:
        for wnid in sorted(os.listdir(train)):
            inner = os.path.join(root, f"{wnid}.tar")
            with tarfile.open(inner, "w") as t:
                for f in sorted(os.listdir(os.path.join(train, wnid))):
                    t.add(os.path.join(train, wnid, f), arcname=f)
            outer.add(inner, arcname=f"{wnid}.tar")
            os.remove(inner)
    with tarfile.open(os.path.join(root, "ILSVRC2012_img_val.tar"), "w") as t:
        for f in sorted(os.listdir(val)):
            t.add(os.path.join(val, f), arcname=f)
    shutil.rmtree(train), shutil.rmtree(val)
    return {"train": _md5(os.path.join(root, "ILSVRC2012_img_train.tar")),
            "val": _md5(os.path.join(root, "ILSVRC2012_img_val.tar"))}


def make_fake_ilsvrc(root, train_per_class=4, val_per_class=2, size=16, wnids=WNIDS) -> dict:
    """The raw ILSVRC2012 layout: ROOT/ILSVRC2012_devkit_t12.tar.gz (data/meta.mat with the synsets and
    data/ILSVRC2012_validation_ground_truth.txt, as in the official devkit), ROOT/train/<wnid>/*.JPEG and a
    flat ROOT/val/ILSVRC2012_val_<8 digits>.JPEG. Returns the devkit's md5 and the val labels (class indices
    into sorted `wnids`)."""
    import tarfile
    import tempfile

    import scipy.io as sio
    wnids = tuple(sorted(wnids))
    make_image_folder(os.path.join(root, "train"), {w: train_per_class for w in wnids}, size, seed=0)
    rng = np.random.default_rng(1)
    # ILSVRC2012_IDs of the leaf synsets are not in wnid order; a parent synset (num_children > 0) is skipped
    ids = {w: (i + 2) % len(wnids) + 1 for i, w in enumerate(wnids)}
    rows = [(ids[w], w, f"words {w}, alias", "gloss", 0) for w in wnids]
    rows.append((len(wnids) + 1, "n00000001", "parent", "g", 3))
    synsets = np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
                                    ("num_children", "O")])
    val_classes = list(rng.permutation(np.repeat(np.arange(len(wnids)), val_per_class)))
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "ILSVRC2012_devkit_t12", "data")
        os.makedirs(data)
        sio.savemat(os.path.join(data, "meta.mat"), {"synsets": synsets})
        with open(os.path.join(data, "ILSVRC2012_validation_ground_truth.txt"), "w") as f:
            f.writelines(f"{ids[wnids[c]]}\n" for c in val_classes)
        with tarfile.open(os.path.join(root, "ILSVRC2012_devkit_t12.tar.gz"), "w:gz") as tar:
            tar.add(os.path.join(tmp, "ILSVRC2012_devkit_t12"), arcname="ILSVRC2012_devkit_t12")
    for i, c in enumerate(val_classes):
        _save(_image(rng, size, int(c)), os.path.join(root, "val", f"ILSVRC2012_val_{i + 1:08d}.JPEG"))
    return {"md5": _md5(os.path.join(root, "ILSVRC2012_devkit_t12.tar.gz")), "val_classes": [int(c) for c in val_classes]}


def make_fake_clothing1m(root, train_per_class=2, eval_per_class=1, size=16, seed=0, mislabel_known=0,
                         lists_at_root=False) -> dict:
    """root/annotations/{noisy_label_kv, clean_label_kv, *_key_list}.txt (or the list files in root itself)
    and root/images/<a>/<b>/<k>.jpg.

    Train images get noisy labels (class + 1 for every second one); the first of each class also has a
    clean label, and for the first `mislabel_known` classes that image's noisy label is wrong too.
    Returns the expected counts."""
    rng = np.random.default_rng(seed)
    ann = root if lists_at_root else os.path.join(root, "annotations")
    os.makedirs(ann, exist_ok=True)
    noisy, clean, keys = {}, {}, {"train": [], "val": [], "test": []}
    k = 0
    for split, per in (("train", train_per_class), ("val", eval_per_class), ("test", eval_per_class)):
        for c in range(14):
            for i in range(per):
                key = f"images/{k % 10}/{k % 97:02d}/{k:06d}.jpg"
                _save(_image(rng, size, c), os.path.join(root, key))
                keys[split].append(key)
                if split == "train":
                    noisy[key] = (c + (i % 2 or (i == 0 and c < mislabel_known))) % 14
                    if i == 0:
                        clean[key] = c
                else:
                    clean[key] = c
                k += 1
    for name, table in (("noisy_label_kv.txt", noisy), ("clean_label_kv.txt", clean)):
        with open(os.path.join(ann, name), "w") as f:
            f.writelines(f"{key} {lab}\n" for key, lab in table.items())
    for split, name in (("train", "noisy_train_key_list.txt"), ("val", "clean_val_key_list.txt"),
                        ("test", "clean_test_key_list.txt")):
        with open(os.path.join(ann, name), "w") as f:
            f.writelines(key + "\n" for key in keys[split])
    return {"train": len(keys["train"]), "val": len(keys["val"]), "test": len(keys["test"]),
            "known_clean": 14 if train_per_class else 0}


def _wilds_dir(root, name: str, version: str) -> str:
    d = os.path.join(root, f"{name}_v{version}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"RELEASE_v{version}.txt"), "w") as f:
        f.write("fake release\n")
    return d


def make_fake_camelyon17(root, per_center=8, size=96, seed=0) -> str:
    """root/camelyon17_v1.0/{RELEASE_v1.0.txt, metadata.csv, patches/patient_P_node_N/*.png}.

    Five hospitals ("center"): wilds itself makes center 1 the OOD val split and center 2 the test split;
    in the other centers the last patch is id_val (split 1), the rest train (split 0)."""
    rng = np.random.default_rng(seed)
    d = _wilds_dir(root, "camelyon17", "1.0")
    rows = []
    for center in range(5):
        for i in range(per_center):
            patient, node, tumor = f"{10 * center + i % 2:03d}", i % 2, int(i % 2 == 0)
            x, y = 96 * i, 48 * i
            rows.append({"patient": patient, "node": node, "x_coord": x, "y_coord": y, "tumor": tumor,
                         "slide": 2 * center + i % 2, "center": center,
                         "split": int(center in (0, 3, 4) and i == per_center - 1)})
            _save(_image(rng, size, tumor), os.path.join(
                d, "patches", f"patient_{patient}_node_{node}",
                f"patch_patient_{patient}_node_{node}_x_{x}_y_{y}.png"))
    pd.DataFrame(rows).to_csv(os.path.join(d, "metadata.csv"), index=True)   # read with index_col=0
    return d


def make_fake_waterbirds(root, per_group_split=3, size=32, seed=0) -> str:
    """root/waterbirds_v1.0/{RELEASE_v1.0.txt, metadata.csv, imgs/*.jpg}; split 0 train, 1 val, 2 test;
    `per_group_split` images per (split, bird y, background place)."""
    rng = np.random.default_rng(seed)
    d = _wilds_dir(root, "waterbirds", "1.0")
    rows = []
    for split in range(3):
        for y in range(2):
            for place in range(2):
                for _ in range(per_group_split):
                    fn = f"imgs/{len(rows):05d}.jpg"
                    _save(_image(rng, size, y), os.path.join(d, fn))
                    rows.append({"img_id": len(rows), "img_filename": fn, "y": y, "split": split, "place": place})
    pd.DataFrame(rows).to_csv(os.path.join(d, "metadata.csv"), index=False)
    return d


def make_fake_iwildcam(root, n_classes=3, size=32, seed=0) -> str:
    """root/iwildcam_v2.0/{RELEASE_v2.0.txt, metadata.csv, train/*.jpg}; named splits train, val, test,
    id_val, id_test; every class, location and sequence id occurs (wilds asserts it)."""
    rng = np.random.default_rng(seed)
    d = _wilds_dir(root, "iwildcam", "2.0")
    rows = []
    splits = ["train"] * 2 + ["val", "test", "id_val", "id_test"]
    for s_i, split in enumerate(splits):
        for y in range(n_classes):
            fn = f"{len(rows):05d}.jpg"
            _save(_image(rng, size, y), os.path.join(d, "train", fn))
            rows.append({"split": split, "filename": fn, "y": y, "location_remapped": s_i,
                         "sequence_remapped": len(rows),
                         "datetime": f"2013-06-{1 + s_i:02d} 12:{y:02d}:00.000"})
    pd.DataFrame(rows).to_csv(os.path.join(d, "metadata.csv"), index=False)
    return d


def finish_synthetic(run, result: dict) -> None:
    """Complete a synthetic trial directory the way a real trial does: every output the store verifies
    (metrics.jsonl, margins.npz) exists before `finish` seals them."""
    import numpy as np
    if not run.file("metrics.jsonl").exists():
        last = result.get("metrics", {}).get("epoch", 1)
        for epoch in range(1, last):
            run.append_metrics({"epoch": epoch})
        run.append_metrics({**result.get("metrics", {}), "epoch": last})
    if not run.file("margins.npz").exists():
        run.save_margins({"test_ids": np.arange(2), "test_margins": np.zeros(2), "test_labels": np.zeros(2, int),
                          "test_preds": np.zeros(2, int)})
    run.finish(result)


def claim_column(ordering_row) -> str:
    """The ordering table's verdict column, named by the claim over the planned members (e.g. 'LRW-Easy <
    LRW-Random < LRW-Hard ≤ MOLERE')."""
    return next(c for c in ordering_row.index if (" < " in c or " ≤ " in c) and "−" not in c)
