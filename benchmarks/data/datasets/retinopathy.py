"""Diabetic retinopathy as benchmarked by Band et al. (NeurIPS 2021 Datasets and Benchmarks): EyePACS (the
Kaggle 2015 competition) in distribution, APTOS 2019 (India) as the country-shifted test set. Splits, label
task and readings: docs/datasets.md."""
from __future__ import annotations

import os
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from benchmarks.data.datasets.common import DataMissingError, DatasetOptions, require_files, require_path
from benchmarks.data.datasets.images import ImageFiles, RootDataset, make_sets
from molere.registry import register_dataset
from molere.data import TaskData

GRADES = ("no DR", "mild", "moderate", "severe", "proliferative DR")
REFERABLE_FROM = 2          # referable DR: moderate or worse (Band et al.'s "moderate" decision threshold)
APTOS_TEST_ROWS = 2929      # Band et al.: the first 2,929 rows of APTOS train.csv are the test split, the rest val


@register_dataset("retinopathy")
class Retinopathy(RootDataset):
    """Diabetic retinopathy (Band et al. 2021): EyePACS train (35,126) / val = Kaggle test "Public" (10,906) /
    test = "Private" (42,670), and APTOS 2019 (Band et al.'s 2,929-image test split) as the extra,
    country-shifted test set `aptos`; binary referable DR (grade >= 2) by default, 5 grades as an option."""
    how = ("download the Kaggle competitions diabetic-retinopathy-detection (trainLabels.csv, "
           "retinopathy_solution.csv, train/*.jpeg, test/*.jpeg) and aptos2019-blindness-detection (train.csv, "
           "train_images/*.png) and extract them into ROOT/<competition name>/ (or set eyepacs_dir / aptos_dir)")

    class Options(DatasetOptions):
        label: Literal["referable", "grade"] = Field(
            "referable", description="referable: grade >= 2 vs below (2 classes; Band et al.'s task and the paper's "
                                     "reading); grade: the 5 severity grades")
        image_size: int = Field(512, gt=0, description="side of the square input (Band et al.: 512)")
        augment: bool = True
        eyepacs_dir: str = Field("diabetic-retinopathy-detection", description="EyePACS folder, relative to the root")
        aptos_dir: str = Field("aptos2019-blindness-detection", description="APTOS 2019 folder, relative to the root")
        aptos_split: Literal["test", "all"] = Field(
            "test", description="test: Band et al.'s APTOS test split (first 2,929 rows of train.csv); all: 3,662")

    def _dirs(self, root: str) -> tuple[str, str]:
        return os.path.join(root, self.options.eyepacs_dir), os.path.join(root, self.options.aptos_dir)

    def _how(self, root) -> str:
        return self.how.replace("ROOT", str(root))

    def check(self, root: str | None) -> None:
        """Both competitions' label files and image folders exist (one line naming the first gap)."""
        require_path(root, "retinopathy", self._how(root))
        eyepacs, aptos = self._dirs(root)
        for folder, names in ((eyepacs, ("trainLabels.csv", "retinopathy_solution.csv", "train", "test")),
                              (aptos, ("train.csv", "train_images"))):
            for name in names:
                require_path(os.path.join(folder, name), "retinopathy", self._how(root))

    def _csv(self, path: str, columns: tuple[str, ...]) -> pd.DataFrame:
        table = pd.read_csv(path, dtype={columns[0]: str})
        absent = [c for c in columns if c not in table.columns]
        if absent:
            raise DataMissingError(f"dataset 'retinopathy': {path}: expected the columns {', '.join(columns)} "
                                   f"(missing {', '.join(absent)}); is it the competition's original file?")
        return table

    def _splits(self, root: str) -> dict[str, tuple[list[str], np.ndarray]]:
        """(image paths, 0-4 grades) of train, val, test and aptos."""
        eyepacs, aptos = self._dirs(root)
        train = self._csv(os.path.join(eyepacs, "trainLabels.csv"), ("image", "level"))
        kaggle_test = self._csv(os.path.join(eyepacs, "retinopathy_solution.csv"), ("image", "level", "Usage"))
        shifted = self._csv(os.path.join(aptos, "train.csv"), ("id_code", "diagnosis"))
        if self.options.aptos_split == "test":
            shifted = shifted.iloc[:APTOS_TEST_ROWS]

        def part(table, folder, key, grade, ext):
            return [os.path.join(folder, f"{k}{ext}") for k in table[key]], table[grade].to_numpy(np.int64)
        out = {"train": part(train, os.path.join(eyepacs, "train"), "image", "level", ".jpeg")}
        for name, usage in (("val", "Public"), ("test", "Private")):
            out[name] = part(kaggle_test[kaggle_test["Usage"] == usage], os.path.join(eyepacs, "test"), "image",
                             "level", ".jpeg")
        out["aptos"] = part(shifted, os.path.join(aptos, "train_images"), "id_code", "diagnosis", ".png")
        return out

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        self.check(root)
        splits = self._splits(root)
        paths, grades, parts = [], [], {}
        for name, (p, g) in splits.items():
            parts[name] = np.arange(len(paths), len(paths) + len(p))
            paths += p
            grades.append(g)
        grades = np.concatenate(grades)
        if grades.min() < 0 or grades.max() >= len(GRADES):
            raise DataMissingError(f"dataset 'retinopathy': grades must be 0-4 "
                                   f"(found {grades.min()}..{grades.max()})")
        require_files(paths, "retinopathy", self._how(root))
        referable = o.label == "referable"
        labels = (grades >= REFERABLE_FROM).astype(np.int64) if referable else grades
        classes = ["grade 0-1", "grade 2-4 (referable)"] if referable else list(GRADES)
        train_tf, eval_tf = self.transforms("resize", o.image_size, o.augment)
        sets = make_sets(labels, (ImageFiles(paths, train_tf), ImageFiles(paths, eval_tf)), parts)
        return TaskData("retinopathy", sets["train"], sets["test"], len(classes), (3, o.image_size, o.image_size),
                        val=sets["val"], extra_tests={"aptos": sets["aptos"]},
                        info={"classes": classes, "label": o.label,
                              "split_sizes": {k: len(v) for k, v in parts.items()},
                              "grade_counts": {k: np.bincount(grades[v], minlength=5).tolist()
                                               for k, v in parts.items()}})
