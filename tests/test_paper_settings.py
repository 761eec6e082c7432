"""The paper's settings on tiny fakes in the real on-disk formats: ImageNet-R scored on its classes, the
ImageFolder and raw ILSVRC layouts, Clothing-1M's two layouts and clean labels, pretrained weights
checked in the driver, the model's own transforms, and iWildCam's macro-F1 in the report."""
import os
import random
import time

import numpy as np
import pytest
import torch
import yaml

import benchmarks.data.datasets.files  # noqa: F401  (registers the datasets)
from benchmarks import run as run_cli
from benchmarks.trial.config import ModelConfig
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.models import build_model, pretrained_data_config
from benchmarks.data.regimes import RegimeConfig
from molere.registry import DATASETS
from benchmarks.pretrained import check_pretrained
from molere.config import ConfigError, TrainConfig, validate
from molere.data import normalized
from molere.trainer import Trainer
from tests import fakes


def loader(name, **options):
    cls = DATASETS.get(name)
    return cls(validate(cls.Options, options, name))


# ---- ImageNet-R / -A on their class subsets ----------------------------------------------------------
@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    fakes.make_fake_imagenet(root / "in1k", train_per_class=4)        # 3 classes
    r = fakes.make_image_folder(root / "imagenet_r", {fakes.WNIDS[2]: 3, fakes.WNIDS[0]: 3}, seed=2)
    return str(root / "in1k"), r


class Scripted(Trainer):
    """Logits that rank an out-of-subset class (1) first and the true class second, for every example."""

    def eval_logits(self, batch):
        z = torch.zeros(len(batch.y), self.data.num_classes)
        z[torch.arange(len(batch.y)), batch.y_true] = 2.0
        z[:, 1] = 5.0
        return z


def test_imagenet_r_is_scored_on_its_classes(imagenet):
    root, r = imagenet
    task = loader("imagenet", image_size=16, val_fraction=0, extra_tests={"imagenet_r": r}).load(root, 0)
    assert task.class_subsets == {"imagenet_r": [0, 2]}                      # from its class folders
    tr = Scripted(build_model("mlp", 3, (3, 16, 16), {"hidden": []}), task, TrainConfig())
    metrics, outs = tr.evaluate()
    assert metrics["imagenet_r/acc"] == 1.0                                  # masked: best in-subset logit
    assert metrics["test/acc"] == pytest.approx(2 / 6)                       # 1000-way on IN-1K: class 1 only
    p = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    assert outs["imagenet_r"].margins == pytest.approx(np.full(6, float(p[0] - p[1])), abs=1e-6)
    # unmasked, the same logits score 0: the mechanism is what changes the number
    whole = loader("imagenet", image_size=16, val_fraction=0, extra_tests={"imagenet_r": r},
                   subset_classes=False).load(root, 0)
    assert whole.class_subsets == {}
    assert Scripted(tr.model, whole, TrainConfig()).evaluate()[0]["imagenet_r/acc"] == 0.0


def test_val_source_keeps_the_subset(imagenet):
    root, r = imagenet
    task = loader("imagenet", image_size=16, extra_tests={"imagenet_r": r}, val_source="imagenet_r").load(root, 0)
    assert task.class_subsets == {"imagenet_r": [0, 2], "val": [0, 2]}
    assert set(task.val.labels.tolist()) == {0, 2}


# ---- ImageNet layouts -------------------------------------------------------------------------------
@pytest.fixture
def devkit_md5(monkeypatch):
    """torchvision checks the devkit's md5; the fake's own md5 stands in for the official one."""
    import torchvision.datasets.imagenet as tv

    def use(md5):
        monkeypatch.setitem(tv.ARCHIVE_META, "devkit", (tv.ARCHIVE_META["devkit"][0], md5))
    return use


def test_raw_ilsvrc_layout_with_devkit_loads_the_right_labels(tmp_path, devkit_md5):
    fake = fakes.make_fake_ilsvrc(tmp_path, train_per_class=3, val_per_class=2)
    devkit_md5(fake["md5"])
    ds = loader("imagenet", image_size=16, val_fraction=0)
    ds.check(str(tmp_path))                               # parses the devkit once, in the driver (cached elsewhere)
    assert not (tmp_path / "meta.bin").exists()
    task = ds.load(str(tmp_path), 0)
    assert task.info["classes"] == list(fakes.WNIDS) and len(task.train) == 9 and len(task.test) == 6
    src = task.test.source
    files = [os.path.basename(src.paths[p]) for p in task.test.positions]
    assert files == sorted(files) and os.path.dirname(src.paths[task.test.positions[0]]).endswith("val")
    assert task.test.labels.tolist() == fake["val_classes"]          # the devkit's ground truth, by wnid
    for lab, p in zip(task.train.labels, task.train.positions):
        assert os.path.basename(os.path.dirname(task.train.source.paths[p])) == fakes.WNIDS[int(lab)]
    assert not any(d.is_dir() for d in os.scandir(tmp_path / "val"))   # the user's val/ is left as it is


def test_imagefolder_layout_loads_the_right_labels(imagenet):
    root, _ = imagenet
    task = loader("imagenet", image_size=16, val_fraction=0).load(root, 0)
    for part in (task.train, task.test):
        for lab, p in zip(part.labels, part.positions):
            assert os.path.basename(os.path.dirname(part.source.paths[p])) == fakes.WNIDS[int(lab)]


def write_sweep(path, dataset: dict, model: dict | None = None) -> str:
    spec = {"name": "s", "results_dir": str(path / "results"), "datasets": [dataset],
            "model": model or {"name": "mlp", "options": {"hidden": [4]}}, "methods": {"erm": {}},
            "train": {"epochs": 1}}
    f = path / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec))
    return str(f)


@pytest.mark.parametrize("layout,needle", [
    ("flat_val", "ILSVRC2012_devkit_t12.tar.gz"),        # raw val without the devkit that labels it
    ("no_val", "val: expected an ImageFolder tree"),
    ("empty_train", "train: expected class folders"),
    ("bad_devkit", "ILSVRC2012_devkit_t12.tar.gz: expected the official devkit")])
def test_wrong_imagenet_root_fails_before_ray_with_exit_2(tmp_path, capsys, monkeypatch, layout, needle):
    root = tmp_path / "in"
    fakes.make_fake_imagenet(root, train_per_class=1, val_per_class=1)
    if layout == "flat_val":
        for d in os.scandir(root / "val"):
            for f in os.scandir(d.path):
                os.rename(f.path, root / "val" / f.name)
            os.rmdir(d.path)
    elif layout == "no_val":
        os.rename(root / "val", tmp_path / "elsewhere")
    elif layout == "empty_train":
        for d in os.scandir(root / "train"):
            for f in os.scandir(d.path):
                os.remove(f.path)
            os.rmdir(d.path)
    else:
        (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"not a tarball")
    import ray
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    f = write_sweep(tmp_path, {"name": "imagenet", "root": str(root), "options": {"image_size": 16}})
    with pytest.raises(SystemExit) as exc:
        run_cli.main([f])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert needle in err and str(root) in err


# ---- Clothing-1M ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("at_root", [False, True])
def test_clothing1m_both_layouts_and_clean_labels_as_true(tmp_path, at_root):
    n = fakes.make_fake_clothing1m(tmp_path, mislabel_known=3, lists_at_root=at_root)
    task = load_task(DatasetConfig(name="clothing1m", root=str(tmp_path), options={"image_size": 16}),
                     RegimeConfig(), 0)
    assert len(task.train) == n["train"] and task.info["train_known_clean"] == 14
    assert task.info["noise_rate_known_clean"] == pytest.approx(3 / 14)     # realised on the clean keys
    assert task.info["train_noise_rate"] == pytest.approx(3 / 28)
    wrong = task.train.labels != task.train.true_labels
    assert int(wrong.sum()) == 3 and set(task.train.true_labels[wrong].tolist()) == {0, 1, 2}


def test_clothing1m_missing_lists_name_both_places(tmp_path):
    fakes.make_fake_clothing1m(tmp_path, lists_at_root=True)
    os.remove(tmp_path / "clean_val_key_list.txt")
    with pytest.raises(Exception, match=r"clean_val_key_list.txt not found; expected the list files .* in "
                                        r".*annotations or"):
        loader("clothing1m").check(str(tmp_path))


# ---- pretrained weights ------------------------------------------------------------------------------
def test_missing_local_weight_file_stops_the_sweep_in_the_driver(tmp_path, capsys, monkeypatch):
    import ray
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    missing = tmp_path / "nowhere" / "vit.safetensors"
    f = write_sweep(tmp_path, {"name": "digits"},
                    {"name": "timm", "options": {"arch": "resnet18", "pretrained": True, "weights": str(missing)}})
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        run_cli.main([f])
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "model.options.weights" in err and str(missing) in err and "not found" in err
    assert not (tmp_path / "results" / "s" / "plan.json").exists()


def test_local_weight_file_is_verified_and_loaded(tmp_path):
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(1)
    src = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    cfg = ModelConfig(name="timm", options={"arch": "resnet18", "pretrained": True, "weights": str(path)})
    assert check_pretrained(cfg) == f"local file {path}"
    model = build_model("timm", 5, (3, 32, 32), cfg.options)
    assert torch.equal(model.conv1.weight, src.conv1.weight)         # the file's weights, head replaced
    assert model.get_classifier().out_features == 5
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="bad.pth is not a readable weight file"):
        check_pretrained(ModelConfig(name="timm", options={"arch": "resnet18", "pretrained": True,
                                                           "weights": str(tmp_path / "bad.pth")}))
    with pytest.raises(ConfigError, match="weights needs pretrained: true"):
        build_model("timm", 5, (3, 32, 32), {"arch": "resnet18", "weights": str(path)})


def test_hub_weights_need_a_cache_entry_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = ModelConfig(name="timm/resnet18.a1_in1k", options={"pretrained": True})
    with pytest.raises(ConfigError, match=r"timm/resnet18.a1_in1k\) are not in the HF cache and the hub is offline; .*model.options.weights"):
        check_pretrained(cfg, cache_dir=str(tmp_path))
    snap = tmp_path / "models--timm--resnet18.a1_in1k"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"x")
    assert check_pretrained(cfg, cache_dir=str(tmp_path)).startswith("HF cache ")
    assert check_pretrained(ModelConfig(name="timm/resnet18", options={})) == ""     # nothing to verify


# ---- the model's own transforms -------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny_patch16_224.augreg_in21k"])
def test_train_transform_equals_timms_for_the_pretrained_config(imagenet, arch):
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config
    root, _ = imagenet
    cfg = pretrained_data_config("timm", {"arch": arch, "pretrained": True})
    task = load_task(DatasetConfig(name="imagenet", root=root, options={"image_size": 224}), RegimeConfig(), 0, cfg)
    src, eval_src = task.train.source, task.train.eval_source   # uint8 items, normalised on the device
    ours_train = lambda img: normalized(src.transform(img)[None], *src.normalize)[0]   # noqa: E731
    ours_eval = lambda img: normalized(eval_src.transform(img)[None], *eval_src.normalize)[0]   # noqa: E731
    model = timm.create_model(arch, pretrained=False)
    ref_cfg = resolve_model_data_config(model)
    theirs_train, theirs_eval = create_transform(**ref_cfg, is_training=True), create_transform(**ref_cfg)
    assert repr(src.transform.transforms[:-1]) == repr(theirs_train.transforms[:-2])   # same ops before the tensor
    assert repr(eval_src.transform.transforms[:-1]) == repr(theirs_eval.transforms[:-2])
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    random.seed(3), torch.manual_seed(3)          # timm's random crop draws from `random`, the flip from torch
    a = ours_train(img)
    random.seed(3), torch.manual_seed(3)
    assert torch.equal(a, theirs_train(img)) and torch.equal(ours_eval(img), theirs_eval(img))
    if arch.startswith("vit"):   # the in21k weights expect mean = std = 0.5, bicubic, crop 0.9
        assert ref_cfg["mean"] == (0.5, 0.5, 0.5) and ref_cfg["crop_pct"] == 0.9
    # without pretrained weights the dataset keeps its own transforms
    assert pretrained_data_config("timm", {"arch": arch}) is None


# ---- iWildCam's official macro-F1 in the report ----------------------------------------------------------
def test_iwildcam_macro_f1_in_the_report_of_a_fake_wilds_store(tmp_path):
    from benchmarks.report import build_report
    from benchmarks.sweep.plan import expand_trials
    from benchmarks.sweep.schema import load_sweep
    from benchmarks.sweep.stored import write_plan
    from benchmarks.trial.execute import run_trial
    wroot = tmp_path / "wilds"
    fakes.make_fake_iwildcam(wroot, size=16)
    spec = {"name": "w", "results_dir": str(tmp_path / "results"),
            "datasets": [{"name": "iwildcam", "root": str(wroot), "options": {"image_size": 16}}],
            "model": {"name": "mlp", "options": {"hidden": [8]}}, "methods": {"erm": {}, "mwn": {}},
            "seeds": [0, 1], "train": {"epochs": 1, "batch_size": 4}}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(spec))
    sweep = load_sweep(tmp_path / "w.yaml")
    plan = expand_trials(sweep)
    write_plan(sweep, plan)
    f1 = {}
    for t in plan:
        res = run_trial(t.config, sweep.directory / "trials" / t.trial_id, store_root=sweep.directory / "trials")
        f1[(t.labels["method"], t.labels["seed"])] = res["metrics"]["test/F1-macro_all"]
    out = build_report(sweep.directory)
    assert "accuracy_test_F1-macro_all" in out["tables"]
    md = (sweep.directory / "report" / "report.md").read_text()
    assert "test macro-F1 (%)" in md
    import pandas as pd
    table = pd.read_csv(out["tables"]["accuracy_test_F1-macro_all"]["csv"])
    erm = [f1[("erm", s)] for s in (0, 1)]
    assert table["erm"].item().startswith(f"{100 * np.mean(erm):.2f} [")   # mean [95% CI]
    trials = pd.read_csv(out["trials_csv"])
    gain = 100 * (f1[("mwn", 0)] - f1[("erm", 0)])
    from benchmarks.report.collect import collect
    from benchmarks.report.stats import cells
    c = cells(*collect(sweep.directory))
    row = c[c["method"] == "mwn"].iloc[0]
    assert row["gain[test/F1-macro_all] n"] == 2
    assert row["gain[test/F1-macro_all] mean"] == pytest.approx(
        np.mean([100 * (f1[("mwn", s)] - f1[("erm", s)]) for s in (0, 1)]))
    assert "test/F1-macro_all" in trials.columns and np.isfinite(gain)
    assert any("gains_ood" in fig for fig in out["figures"])


# ---- Table 4's "ERM (IN1K+INR)" control and the shipped sweeps --------------------------------------------
def test_erm_train_val_trains_on_train_plus_the_imagenet_r_validation_half(imagenet):
    from molere.registry import METHODS
    root, r = imagenet
    task = loader("imagenet", image_size=16, extra_tests={"imagenet_r": r}, val_source="imagenet_r").load(root, 0)
    cls = METHODS.get("erm_train_val")
    tr = cls(build_model("mlp", 3, (3, 16, 16), {"hidden": [4]}), task, TrainConfig(epochs=1, batch_size=5,
                                                                                   budget="epochs"))
    assert sorted(tr.train_set.ids.tolist()) == sorted(task.train.ids.tolist() + task.val.ids.tolist())
    steps = []
    step = tr.train_step
    tr.train_step = lambda b: (steps.append(len(b.y)), step(b))[1]
    metrics = tr.fit()
    assert sum(steps) == len(task.train) + len(task.val) and not any(k.startswith("val/") for k in metrics)
    same_steps = cls(build_model("mlp", 3, (3, 16, 16), {"hidden": [4]}), task, TrainConfig(epochs=1, batch_size=5))
    same_steps.fit()   # budget steps (default): ERM's steps, -(-|train| // 5), over the pooled data
    assert same_steps.global_step == -(-len(task.train) // 5) < len(steps)
    assert "imagenet_r/acc" in metrics and tr.info["pooled_val_size"] == len(task.val)
    no_val = loader("imagenet", image_size=16, val_fraction=0).load(root, 0)
    with pytest.raises(ConfigError, match="erm_train_val' needs a validation split"):
        cls(build_model("mlp", 3, (3, 16, 16), {"hidden": [4]}), no_val, TrainConfig())


def test_shipped_sweeps_are_the_paper_settings():
    from pathlib import Path

    from benchmarks.sweep.schema import load_sweep
    sweeps = Path(__file__).resolve().parents[1] / "sweeps"
    inet = load_sweep(sweeps / "imagenet.yaml")
    assert inet.model.options["arch"] == "vit_base_patch16_224.augreg_in21k"     # pretrained only, not IN-1K
    assert (inet.train.schedule, inet.train.decay_norm_bias) == ("warmup_cosine", False)
    assert inet.train.warmup_epochs > 0 and inet.train.label_smoothing > 0
    t4 = load_sweep(sweeps / "imagenet_r_val.yaml")
    assert t4.model.options["arch"].startswith("resnet50") and "erm_train_val" in t4.methods
    assert t4.datasets[0].options["val_source"] == "imagenet_r"
    for name in ("cifar100", "cifar10_noisy", "clothing1m", "imagenet", "imagenet_r_val", "wilds"):
        text = (sweeps / f"{name}.yaml").read_text()
        assert "# Reproduces:" in text and "# Deviations" in text, name
