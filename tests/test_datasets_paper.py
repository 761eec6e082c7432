"""The paper's remaining datasets on tiny fakes in their real layouts: FGVC-Aircraft, Stanford Cars, Oxford-IIIT
Pets, ImageNet-100 (both ImageNet layouts), diabetic retinopathy (EyePACS + APTOS 2019 as the shifted test)."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from molere.data import normalized

from benchmarks import run
from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.datasets.imagenet100 import CMC_LIST, read_wnids
from molere.registry import DATASETS
from molere.config import validate
from tests import fake_paper_data as F
from tests import fakes
from tests.test_datasets_files import check_task


def loader(name, **options):
    cls = DATASETS.get(name)
    return cls(validate(cls.Options, options, name))


def names_of(part) -> list[str]:
    """The file names (without extension) of an ExampleSet's images, in its order."""
    return [os.path.splitext(os.path.basename(part.source.paths[p]))[0] for p in part.positions]


# ---- FGVC-Aircraft -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aircraft(tmp_path_factory):
    root = tmp_path_factory.mktemp("aircraft")
    return str(root), F.make_fake_aircraft(root)      # 4 variants x 2 images per official split


def test_aircraft_official_splits_and_labels(aircraft):
    root, truth = aircraft
    task = loader("fgvc_aircraft", image_size=16).load(root, 0)
    assert task.num_classes == 4 and task.info["classes"] == list(F.AIRCRAFT)     # variants.txt order
    check_task(task, {"train": 8, "val": 8, "test": 8})
    for split, part in (("train", task.train), ("val", task.val), ("test", task.test)):
        assert [task.info["classes"][int(c)] for c in part.labels] == [truth[split][i] for i in names_of(part)]


def test_aircraft_levels_pooled_val_and_root_spelling(aircraft):
    root, truth = aircraft
    fam = loader("fgvc_aircraft", image_size=16, annotation_level="family").load(root, 0)
    man = loader("fgvc_aircraft", image_size=16, annotation_level="manufacturer").load(root, 0)
    assert (fam.num_classes, man.num_classes) == (4, 3)
    test_man = [man.info["classes"][int(c)] for c in man.test.labels]
    assert test_man == [F.AIRCRAFT[truth["test"][i]][1] for i in names_of(man.test)]
    pooled = loader("fgvc_aircraft", image_size=16, official_val=False, val_fraction=0.25).load(root, 0)
    check_task(pooled, {"train": 12, "val": 4, "test": 8})
    assert set(names_of(pooled.train)) | set(names_of(pooled.val)) == set(truth["trainval"])
    inner = loader("fgvc_aircraft", image_size=16).load(os.path.join(root, "fgvc-aircraft-2013b"), 0)
    assert torch.equal(inner.test.labels, loader("fgvc_aircraft", image_size=16).load(root, 0).test.labels)


def test_aircraft_missing_list_names_it(aircraft, tmp_path):
    with pytest.raises(DataMissingError, match=r"nowhere not found.*robots.ox.ac.uk"):
        loader("fgvc_aircraft").check(str(tmp_path / "nowhere"))
    F.make_fake_aircraft(tmp_path, per_split=1)
    os.remove(tmp_path / "fgvc-aircraft-2013b" / "data" / "images_family_val.txt")
    loader("fgvc_aircraft").check(str(tmp_path))                              # the variant lists are complete
    with pytest.raises(DataMissingError, match="images_family_val.txt not found"):
        loader("fgvc_aircraft", annotation_level="family").check(str(tmp_path))
    os.remove(next(iter((tmp_path / "fgvc-aircraft-2013b" / "data" / "images").iterdir())))
    with pytest.raises(DataMissingError, match=r"1 of the 12 listed images are missing"):
        loader("fgvc_aircraft", image_size=16).load(str(tmp_path), 0)


# ---- Stanford Cars -----------------------------------------------------------------------------------
def test_cars_devkit_layout_labels_and_held_out_val(tmp_path):
    truth = F.make_fake_cars(tmp_path)            # 3 classes x (5 train, 2 test)
    task = loader("stanford_cars", image_size=16, val_fraction=0.2).load(str(tmp_path), 0)
    assert task.num_classes == 3 and task.info["classes"] == list(F.CARS)
    check_task(task, {"train": 12, "val": 3, "test": 6})
    assert (task.val.class_counts(3) == 1).all()                            # stratified hold-out of train
    for split, part in (("train", task.train), ("train", task.val), ("test", task.test)):
        assert part.labels.tolist() == [truth[split][n + ".jpg"] for n in names_of(part)]
    os.remove(tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat")
    with pytest.raises(DataMissingError, match=r"cars_test_annos_withlabels.mat not found.*offline"):
        loader("stanford_cars").check(str(tmp_path))


# ---- Oxford-IIIT Pets --------------------------------------------------------------------------------
def test_pets_breeds_and_species(tmp_path):
    truth = F.make_fake_pets(tmp_path)            # 5 breeds x (5 trainval, 2 test)
    task = loader("oxford_pets", image_size=16, val_fraction=0.2).load(str(tmp_path), 0)
    assert task.num_classes == 5 and task.info["classes"][:2] == ["Abyssinian", "Bengal"]
    check_task(task, {"train": 20, "val": 5, "test": 10})
    for split, part in (("trainval", task.train), ("trainval", task.val), ("test", task.test)):
        assert part.labels.tolist() == [truth[split][n][0] for n in names_of(part)]
    cats_dogs = loader("oxford_pets", image_size=16, label="species", val_fraction=0).load(str(tmp_path), 0)
    assert cats_dogs.num_classes == 2 and cats_dogs.info["classes"] == ["Cat", "Dog"]
    assert cats_dogs.test.labels.tolist() == [truth["test"][n][1] for n in names_of(cats_dogs.test)]
    assert cats_dogs.test.class_counts(2).tolist() == [4, 6]


def test_pretrained_data_config_sets_the_transforms(tmp_path):
    F.make_fake_pets(tmp_path, trainval_per_breed=1, test_per_breed=1)
    ds = loader("oxford_pets", image_size=16, val_fraction=0)
    ds.data_config = {"input_size": (3, 16, 16), "interpolation": "bilinear", "mean": (0.5,) * 3,
                      "std": (0.5,) * 3, "crop_pct": 1.0}
    task = ds.load(str(tmp_path), 0)
    p = task.test.positions[0]
    raw = torch.as_tensor(np.array(Image.open(task.test.source.paths[p]).convert("RGB")), dtype=torch.float32)
    expect = (raw.permute(2, 0, 1) / 255 - 0.5) / 0.5          # the weights' mean/std, not ImageNet's
    src = task.test.eval_source
    item = src[p][0]
    if item.dtype == torch.uint8:   # uint8 on the wire, normalised on arrival (molere.data.normalized)
        item = normalized(item[None], *src.normalize)[0]
    assert torch.allclose(item, expect, atol=1e-5)


# ---- ImageNet-100 ------------------------------------------------------------------------------------
OTHERS = ("n00000002", "n00000003")               # ImageNet classes outside the list


def test_shipped_cmc_list_is_the_verbatim_file():
    wnids = read_wnids(CMC_LIST)
    assert len(wnids) == 100 == len(set(wnids)) and wnids[:2] == ["n02869837", "n01749939"]
    body = "".join(w + "\n" for w in wnids).encode()
    header = open(CMC_LIST).read()
    assert hashlib.sha256(body).hexdigest() in header and "HobbitLong/CMC" in header


@pytest.fixture(scope="module")
def in100_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("in100")
    listed = read_wnids(CMC_LIST)
    fakes.make_image_folder(root / "train", {w: 2 for w in (*listed, *OTHERS)}, size=8)
    fakes.make_image_folder(root / "val", {w: 1 for w in (*listed, *OTHERS)}, size=8, seed=1)
    return str(root)


def test_imagenet100_imagefolder_reads_only_the_listed_classes(in100_root):
    task = loader("imagenet100", image_size=8, val_fraction=0.5).load(in100_root, 0)
    wnids = sorted(read_wnids(CMC_LIST))
    assert task.num_classes == 100 and task.info["classes"] == wnids and task.name == "imagenet100"
    check_task(task, {"train": 100, "val": 100, "test": 100})
    for part in (task.train, task.val, task.test):
        folders = [os.path.basename(os.path.dirname(part.source.paths[p])) for p in part.positions]
        assert [wnids[int(c)] for c in part.labels] == folders and not set(folders) & set(OTHERS)


def test_imagenet100_names_a_missing_class(in100_root, tmp_path):
    fakes.make_image_folder(tmp_path / "train", {w: 1 for w in read_wnids(CMC_LIST)[:-1]}, size=8)
    fakes.make_image_folder(tmp_path / "val", {w: 1 for w in read_wnids(CMC_LIST)}, size=8)
    with pytest.raises(DataMissingError, match=r"train/n02090622: expected a folder for each of the 100 listed "
                                               r"classes \(1 missing\)"):
        loader("imagenet100").check(str(tmp_path))


def test_imagenet100_raw_ilsvrc_layout(tmp_path, monkeypatch):
    import torchvision.datasets.imagenet as tv
    fake = fakes.make_fake_ilsvrc(tmp_path, train_per_class=1, val_per_class=1, size=8,
                                  wnids=(*read_wnids(CMC_LIST), *OTHERS))
    monkeypatch.setitem(tv.ARCHIVE_META, "devkit", (tv.ARCHIVE_META["devkit"][0], fake["md5"]))
    ds = loader("imagenet100", image_size=8, val_fraction=0)
    ds.check(str(tmp_path))
    task = ds.load(str(tmp_path), 0)
    every = sorted((*read_wnids(CMC_LIST), *OTHERS))
    listed = sorted(read_wnids(CMC_LIST))
    kept = [every[c] for c in fake["val_classes"] if every[c] in listed]   # the devkit's labels, subset
    assert task.num_classes == 100 and len(task.train) == 100 and len(task.test) == 100
    assert [listed[int(c)] for c in task.test.labels] == kept


# ---- Diabetic retinopathy ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dr(tmp_path_factory):
    root = tmp_path_factory.mktemp("dr")
    return str(root), F.make_fake_retinopathy(root)   # EyePACS 20 / 10 / 10, APTOS 3,000 rows


def test_retinopathy_splits_and_referable_labels(dr):
    root, tables = dr
    task = loader("retinopathy", image_size=16).load(root, 0)
    assert task.num_classes == 2
    check_task(task, {"train": 20, "val": 10, "test": 10, "aptos": 2929})
    for part, table in ((task.train, tables["train"]), (task.val, tables["Public"]), (task.test, tables["Private"])):
        grade = dict(zip(table["image"], table["level"]))
        assert part.labels.tolist() == [int(grade[n] >= 2) for n in names_of(part)]
    aptos = task.extra_tests["aptos"]
    assert names_of(aptos) == tables["aptos"]["id_code"].tolist()[:2929]     # Band et al.'s test rows, in order
    assert aptos.labels.tolist() == [int(g >= 2) for g in tables["aptos"]["diagnosis"][:2929]]


def test_retinopathy_country_shift_set_is_kept_apart(dr):
    root, _ = dr
    task = loader("retinopathy", image_size=16, label="grade", aptos_split="all").load(root, 0)
    assert task.num_classes == 5 and len(task.extra_tests["aptos"]) == 3000
    aptos = task.extra_tests["aptos"]
    in_dist = torch.cat([task.train.ids, task.val.ids, task.test.ids])
    assert not set(aptos.ids.tolist()) & set(in_dist.tolist())
    src = task.train.source
    aptos_dir = os.path.join(root, "aptos2019-blindness-detection")
    assert all(src.paths[p].startswith(aptos_dir) for p in aptos.positions)
    assert not any(src.paths[p].startswith(aptos_dir) for s in (task.train, task.val, task.test) for p in s.positions)
    assert task.info["grade_counts"]["train"] == [4, 4, 4, 4, 4]


def test_retinopathy_missing_files(dr, tmp_path):
    with pytest.raises(DataMissingError, match=r"diabetic-retinopathy-detection/trainLabels.csv not found"):
        loader("retinopathy").check(str(tmp_path))
    root, _ = dr
    with pytest.raises(DataMissingError, match=r"elsewhere/train.csv not found.*aptos2019-blindness-detection"):
        loader("retinopathy", aptos_dir=str(tmp_path / "elsewhere")).check(root)


# ---- the driver: each dataset's check before Ray, and benchmarks.list ----------------------------------
@pytest.mark.parametrize("name", ["fgvc_aircraft", "stanford_cars", "oxford_pets", "imagenet100", "retinopathy"])
def test_missing_data_stops_the_sweep_before_ray(name, tmp_path, capsys, monkeypatch):
    from benchmarks.sweep import scheduler
    monkeypatch.setattr(scheduler, "run_trials", lambda *a, **k: pytest.fail("a trial was launched"))
    spec = {"name": "s", "datasets": [{"name": name, "root": str(tmp_path / "absent")}],
            "model": {"name": "mlp"}, "methods": {"erm": {}}, "train": {"epochs": 1}, "wandb": {"mode": "disabled"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as exc:
        run.main([str(tmp_path / "s.yaml"), "--results", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"datasets.{name}.root: dataset '{name}'" in err[0] and "absent" in err[0]
    assert run.main([str(tmp_path / "s.yaml"), "--results", str(tmp_path / "r"), "--dry-run"]) == 0


def test_list_shows_the_new_datasets(capsys):
    from benchmarks.list import main
    main(["datasets"])
    out = capsys.readouterr().out
    assert all(n in out for n in ("fgvc_aircraft", "stanford_cars", "oxford_pets", "imagenet100", "retinopathy"))
    main(["datasets", "retinopathy"])
    assert "label = \"referable\"" in capsys.readouterr().out


# ---- MNIST-1D with a shifted test set (the CPU twins' OOD set) ----------------------------------------
def test_mnist1d_shift_is_a_harder_draw_and_can_be_the_validation_source():
    from sklearn.linear_model import LogisticRegression
    task = loader("mnist1d_shift").load(None, 0)
    check_task(task, {"train": 3601, "val": 399, "test": 1000, "shifted": 2000})
    clf = LogisticRegression(max_iter=300).fit(task.train.x.numpy(), task.train.labels.numpy())
    acc = {k: clf.score(s.x.numpy(), s.labels.numpy()) for k, s in (("test", task.test),
                                                                      ("shifted", task.extra_tests["shifted"]))}
    assert acc["shifted"] < acc["test"] - 0.05, acc            # the shift costs an ID-trained model accuracy
    t4 = loader("mnist1d_shift", val_source="shifted").load(None, 0)
    check_task(t4, {"train": 4000, "val": 1000, "test": 1000, "shifted": 1000})
    assert (t4.val.class_counts(10) - t4.extra_tests["shifted"].class_counts(10)).abs().max() <= 1   # stratified
    assert not set(t4.val.ids.tolist()) & (set(t4.extra_tests["shifted"].ids.tolist()) | set(t4.train.ids.tolist()))
    assert torch.equal(t4.val.ids, loader("mnist1d_shift", val_source="shifted").load(None, 5).val.ids)
