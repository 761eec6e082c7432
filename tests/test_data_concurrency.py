"""Data layouts that survive eight concurrent trials: a tar-only ILSVRC is refused with the one command that
prepares it (trials never extract), the devkit metadata is cached outside a root that is never written,
and Clothing-1M's check verifies the images it lists."""
from __future__ import annotations

import multiprocessing
import os

import pytest
import yaml

import benchmarks.data.datasets.files  # noqa: F401  (registers the datasets)
from benchmarks import run as run_cli
from benchmarks.data import prepare
from benchmarks.data.datasets.common import DataMissingError
from benchmarks.data.datasets.files import imagenet_meta
from molere.registry import DATASETS
from molere.config import validate
from tests import fakes


def loader(name, **options):
    cls = DATASETS.get(name)
    return cls(validate(cls.Options, options, name))


@pytest.fixture
def official_md5(monkeypatch):
    """torchvision checks every archive's md5; the fakes' own md5s stand in for the official ones."""
    import torchvision.datasets.imagenet as tv

    def use(**md5):
        for key, value in md5.items():
            monkeypatch.setitem(tv.ARCHIVE_META, key, (tv.ARCHIVE_META[key][0], value))
    return use


def tree(root) -> dict:
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(root) for f in fs}


def test_tar_only_ilsvrc_is_refused_with_the_command_that_prepares_it(tmp_path, official_md5, capsys, monkeypatch):
    root = tmp_path / "in"
    fake = fakes.make_fake_ilsvrc(root, train_per_class=3, val_per_class=2)
    official_md5(devkit=fake["md5"], **fakes.archive_ilsvrc(root))
    before = tree(root)
    with pytest.raises(DataMissingError, match=rf"python -m benchmarks\.data\.prepare imagenet {root}"):
        loader("imagenet", image_size=16).check(str(root))
    with pytest.raises(DataMissingError, match="only the archive"):   # nor does a trial extract anything
        loader("imagenet", image_size=16).load(str(root), 0)
    assert tree(root) == before
    import ray
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    spec = {"name": "s", "results_dir": str(tmp_path / "results"), "model": {"name": "mlp"}, "methods": {"erm": {}},
            "datasets": [{"name": "imagenet", "root": str(root), "options": {"image_size": 16}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as exc:                               # the driver: one line, exit 2
        run_cli.main([str(tmp_path / "s.yaml")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "benchmarks.data.prepare imagenet" in err

    assert prepare.main(["imagenet", str(root)]) == 0                   # once, before the sweep
    assert sorted(os.listdir(root / "train")) == list(fakes.WNIDS) and not (root / "train.partial").exists()
    assert not any(f.endswith(".tar") for f in os.listdir(root / "train"))
    task = loader("imagenet", image_size=16, val_fraction=0).load(str(root), 0)
    assert len(task.train) == 9 and sorted(task.test.labels.tolist()) == sorted(fake["val_classes"])
    for lab, p in zip(task.test.labels, task.test.positions):           # val sorted by the devkit's labels
        assert os.path.basename(os.path.dirname(str(task.test.source.paths[p]))) == fakes.WNIDS[int(lab)]
    assert "left as it is" in " ".join(prepare.prepare_imagenet(str(root)))   # a second run changes nothing


def test_a_corrupt_archive_is_refused_by_prepare_and_nothing_is_left(tmp_path, official_md5, capsys):
    root = tmp_path / "in"
    official_md5(devkit=fakes.make_fake_ilsvrc(root)["md5"], **fakes.archive_ilsvrc(root))
    official_md5(train="0" * 32)
    with pytest.raises(SystemExit) as exc:
        prepare.main(["imagenet", str(root)])
    assert exc.value.code == 2 and "ILSVRC2012_img_train.tar" in capsys.readouterr().err
    assert not (root / "train").exists()


def _val_wnids(root):
    return imagenet_meta(root)[1]


def test_devkit_metadata_is_cached_outside_a_root_that_is_never_written(tmp_path, official_md5, monkeypatch):
    root = tmp_path / "in"
    fake = fakes.make_fake_ilsvrc(root, train_per_class=2, val_per_class=2)
    official_md5(devkit=fake["md5"])
    monkeypatch.setenv("MOLERE_CACHE", str(tmp_path / "cache"))
    before = tree(root)
    with multiprocessing.get_context("fork").Pool(4) as pool:           # concurrent trials, cold cache
        results = pool.map(_val_wnids, [str(root)] * 8)
    expected = [fakes.WNIDS[c] for c in fake["val_classes"]]
    assert all(r == expected for r in results)
    ds = loader("imagenet", image_size=16, val_fraction=0)
    ds.check(str(root))
    task = ds.load(str(root), 0)
    assert task.test.labels.tolist() == fake["val_classes"]
    assert tree(root) == before and not (root / "meta.bin").exists()    # a read-only mount would do
    cached = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") for f in fs]
    assert [os.path.basename(c) for c in cached] == ["meta.bin"]         # no scratch files left behind
    # a meta.bin that torchvision wrote into ROOT earlier is used as it is
    import torch
    wnid_to_classes, val_wnids = torch.load(cached[0], weights_only=False)
    torch.save((wnid_to_classes, list(reversed(val_wnids))), root / "meta.bin")
    assert ds.load(str(root), 0).test.labels.tolist() == list(reversed(fake["val_classes"]))


@pytest.mark.parametrize("damage,needle", [
    ("one_missing", "1 of the 56 listed images are not under"), ("not_extracted", "56 of the 56 listed images"),
    ("unreadable", "is not a readable image")])
def test_clothing1m_check_verifies_the_listed_images(tmp_path, damage, needle):
    fakes.make_fake_clothing1m(tmp_path)
    ds = loader("clothing1m", image_size=16)
    ds.check(str(tmp_path))                                             # complete: passes
    keys = sorted(line.strip() for f in ds.files[2:] for line in open(tmp_path / "annotations" / f))
    if damage == "one_missing":
        os.remove(tmp_path / keys[5])
    elif damage == "not_extracted":
        import shutil
        shutil.rmtree(tmp_path / "images")
    else:
        (tmp_path / keys[0]).write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataMissingError, match=needle) as exc:
        ds.check(str(tmp_path))
    assert str(tmp_path) in str(exc.value) and "\n" not in str(exc.value)
