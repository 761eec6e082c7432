"""Tiny fakes of the paper's remaining datasets in their real on-disk layouts: FGVC-Aircraft, Stanford Cars,
Oxford-IIIT Pets (torchvision's layouts), ImageNet-100 inside an ImageNet root, EyePACS + APTOS 2019 (the
Kaggle competitions' files). Each builder returns what a test needs to check the loader: file -> label."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tests.fakes import _image, _save

AIRCRAFT = {"707-320": ("Boeing 707", "Boeing"), "A300B4": ("A300", "Airbus"),
            "Cessna 172": ("Cessna 172", "Cessna"), "F/A-18": ("F/A-18", "Boeing")}   # names with spaces, slashes


def make_fake_aircraft(root, per_split=2, size=16, seed=0) -> dict:
    """ROOT/fgvc-aircraft-2013b/data/{images/<7 digits>.jpg, variants.txt, families.txt, manufacturers.txt,
    images_<level>_<train|val|trainval|test>.txt}. Returns {split: {image id: variant}}."""
    rng = np.random.default_rng(seed)
    data = os.path.join(root, "fgvc-aircraft-2013b", "data")
    os.makedirs(os.path.join(data, "images"), exist_ok=True)
    levels = {"variant": list(AIRCRAFT), "family": sorted({f for f, _ in AIRCRAFT.values()}),
              "manufacturer": sorted({m for _, m in AIRCRAFT.values()})}
    for level, file in (("variant", "variants"), ("family", "families"), ("manufacturer", "manufacturers")):
        with open(os.path.join(data, f"{file}.txt"), "w") as f:
            f.writelines(f"{name}\n" for name in levels[level])
    out, k = {}, 1000000
    for split in ("train", "val", "test"):
        out[split] = {}
        for c, variant in enumerate(AIRCRAFT):
            for _ in range(per_split):
                out[split][f"{k:07d}"] = variant
                _save(_image(rng, size, c), os.path.join(data, "images", f"{k:07d}.jpg"))
                k += 1
    out["trainval"] = {**out["train"], **out["val"]}
    for split, items in out.items():
        for level, pick in (("variant", lambda v: v), ("family", lambda v: AIRCRAFT[v][0]),
                            ("manufacturer", lambda v: AIRCRAFT[v][1])):
            with open(os.path.join(data, f"images_{level}_{split}.txt"), "w") as f:
                f.writelines(f"{i} {pick(v)}\n" for i, v in items.items())
    return out


CARS = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TTS Coupe 2012")


def make_fake_cars(root, train_per_class=5, test_per_class=2, size=16, seed=0) -> dict:
    """torchvision's Stanford Cars layout: ROOT/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat, cars_train/<5 digits>.jpg, cars_test/<5 digits>.jpg}; annotation structs
    carry bbox_x1..bbox_y2, class (1-based) and fname as in the devkit. Returns {split: {fname: class index}}."""
    import scipy.io as sio
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "stanford_cars")
    os.makedirs(os.path.join(base, "devkit"), exist_ok=True)
    sio.savemat(os.path.join(base, "devkit", "cars_meta.mat"),
                {"class_names": np.array([list(CARS)], dtype=object)})
    out = {}
    fields = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for split, per, ann in (("train", train_per_class, "devkit/cars_train_annos.mat"),
                            ("test", test_per_class, "cars_test_annos_withlabels.mat")):
        classes = rng.permutation(np.repeat(np.arange(len(CARS)), per))   # files are not grouped by class
        out[split] = {f"{i + 1:05d}.jpg": int(c) for i, c in enumerate(classes)}
        rows = [(1, 2, size - 1, size - 2, c + 1, fname) for fname, c in out[split].items()]
        sio.savemat(os.path.join(base, ann), {"annotations": np.array([rows], dtype=fields)})
        for fname, c in out[split].items():
            _save(_image(rng, size, c), os.path.join(base, f"cars_{split}", fname))
    return out


PETS = (("Abyssinian", 1), ("Bengal", 1), ("american_bulldog", 2), ("beagle", 2), ("pug", 2))   # (breed, species)


def make_fake_pets(root, trainval_per_breed=5, test_per_breed=2, size=16, seed=0) -> dict:
    """ROOT/oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/{trainval,test}.txt} with the lines
    "<image> <class id> <species> <breed id>" (1-based; cats capitalised, dogs lower case, as in the dataset).
    Returns {split: {image: (breed index, species index)}}."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "oxford-iiit-pet")
    os.makedirs(os.path.join(base, "annotations"), exist_ok=True)
    out, n = {}, {}
    for split, per in (("trainval", trainval_per_breed), ("test", test_per_breed)):
        out[split], lines = {}, []
        for c, (breed, species) in enumerate(PETS):
            for _ in range(per):
                n[breed] = n.get(breed, 0) + 1
                image = f"{breed}_{n[breed] * 7}"
                out[split][image] = (c, species - 1)
                lines.append(f"{image} {c + 1} {species} {1 + sum(s == species for _, s in PETS[:c])}\n")
                _save(_image(rng, size, c), os.path.join(base, "images", f"{image}.jpg"))
        with open(os.path.join(base, "annotations", f"{split}.txt"), "w") as f:
            f.writelines(lines)
    return out


def make_fake_retinopathy(root, eyepacs_per_grade=(4, 2, 2), aptos_rows=3000, size=16, seed=0) -> dict:
    """ROOT/diabetic-retinopathy-detection/{trainLabels.csv, retinopathy_solution.csv (image, level, Usage:
    Public / Private), train/<patient>_<left|right>.jpeg, test/...} and ROOT/aptos2019-blindness-detection/
    {train.csv (id_code, diagnosis), train_images/<id_code>.png}. `eyepacs_per_grade`: images per grade in
    train, Public and Private; APTOS has `aptos_rows` rows (Band et al.'s test split: the first 2,929) of 8x8
    images. Returns the tables."""
    rng = np.random.default_rng(seed)
    ep, ap = os.path.join(root, "diabetic-retinopathy-detection"), os.path.join(root, "aptos2019-blindness-detection")
    tables, k = {}, 10
    for split, per in zip(("train", "Public", "Private"), eyepacs_per_grade):
        rows = []
        for grade in range(5):
            for _ in range(per):
                rows.append({"image": f"{k}_{'left' if k % 2 else 'right'}", "level": grade})
                k += 1
        tables[split] = pd.DataFrame(rows)
        folder = os.path.join(ep, "train" if split == "train" else "test")
        for r in rows:
            _save(_image(rng, size, r["level"]), os.path.join(folder, f"{r['image']}.jpeg"))
    tables["train"].to_csv(os.path.join(ep, "trainLabels.csv"), index=False)
    solution = pd.concat([tables["Public"].assign(Usage="Public"), tables["Private"].assign(Usage="Private")])
    solution.sample(frac=1, random_state=seed).to_csv(os.path.join(ep, "retinopathy_solution.csv"), index=False)
    aptos = pd.DataFrame({"id_code": [f"{rng.integers(16**11, 16**12):012x}" for _ in range(aptos_rows)],
                          "diagnosis": rng.integers(0, 5, aptos_rows)})
    os.makedirs(os.path.join(ap, "train_images"), exist_ok=True)
    aptos.to_csv(os.path.join(ap, "train.csv"), index=False)
    for code, grade in zip(aptos["id_code"], aptos["diagnosis"]):
        _image(rng, 8, int(grade)).save(os.path.join(ap, "train_images", f"{code}.png"))
    tables["aptos"] = aptos
    return tables
