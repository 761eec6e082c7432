"""The driver checks /dev/shm and memory for the loader workers of the trials that run at once, before Ray
starts: one line naming the setting to change, exit 2."""
from __future__ import annotations

import pytest
import yaml

from benchmarks import run as run_cli
from benchmarks.sweep import host
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from molere.config import ConfigError
from tests import fakes


def sweep_file(tmp_path, dataset: dict, **train) -> str:
    spec = {"name": "s", "results_dir": str(tmp_path / "results"), "datasets": [dataset],
            "model": {"name": "mlp", "options": {"hidden": [4]}}, "methods": {"erm": {}, "mwn": {}},
            "train": {"epochs": 1, **train}, "resources": {"cpu": 8, "gpu": 1}, "seeds": [0, 1, 2, 3]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return str(tmp_path / "s.yaml")


def imagenet_trials(tmp_path, **train):
    root = fakes.make_fake_imagenet(tmp_path / "in", train_per_class=2, val_per_class=1)
    f = sweep_file(tmp_path, {"name": "imagenet", "root": root, "options": {"image_size": 224}}, **train)
    return expand_trials(load_sweep(f))


def test_loader_need_counts_uint8_batches_in_flight(tmp_path):
    erm, mwn = [t for t in imagenet_trials(tmp_path, batch_size=128)
                if t.labels["seed"] == 0 and t.labels["method"] in ("erm", "mwn")]   # not erm_train_val
    assert host.loader_need(erm, cpus=8) == (7, 2 * 7 * (128 + 512) * 3 * 224 * 224)   # ~1.35 GB
    workers, _ = host.loader_need(mwn, cpus=8)
    assert workers == 7                                    # streams share the trial's workers, never more
    assert host.loader_need(erm, cpus=4)[0] == 3
    digits = expand_trials(load_sweep(sweep_file(tmp_path, {"name": "digits"})))
    assert host.loader_need(digits[0], cpus=8) is None     # in memory: no workers
    assert host.check_host(digits, 8, 1, {"cpu": 64, "gpu": 8}) == ""


def test_a_small_dev_shm_is_one_line_naming_shm_size(tmp_path, monkeypatch):
    trials = imagenet_trials(tmp_path, batch_size=128)
    monkeypatch.setattr(host, "_mem_available", lambda: 2**40)
    monkeypatch.setattr(host, "_shm_free", lambda: 64 * 2**20)           # docker's default 64 MB
    with pytest.raises(ConfigError) as exc:
        host.check_host(trials, 8, 1, {"cpu": 64, "gpu": 8})
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("resources:") and "--shm-size=12g" in msg and "8 trials at once" in msg
    monkeypatch.setattr(host, "_shm_free", lambda: 32 * 2**30)
    assert "fits" in host.check_host(trials, 8, 1, {"cpu": 64, "gpu": 8})
    assert "1 trial at once" in host.check_host(trials, 8, 1, {"cpu": 8, "gpu": 8})   # the CPUs bound it
    monkeypatch.setattr(host, "_mem_available", lambda: 8 * 2**30)
    with pytest.raises(ConfigError, match=r"need about .* of memory .* lower train.num_workers"):
        host.check_host(trials, 8, 1, {"cpu": 64, "gpu": 8})
    monkeypatch.setenv("MOLERE_SKIP_HOST_CHECK", "1")
    assert host.check_host(trials, 8, 1, {"cpu": 64, "gpu": 8}) == ""


def test_the_driver_stops_before_ray(tmp_path, monkeypatch, capsys):
    root = fakes.make_fake_imagenet(tmp_path / "in", train_per_class=2, val_per_class=1)
    f = sweep_file(tmp_path, {"name": "imagenet", "root": root, "options": {"image_size": 224}}, batch_size=128)
    import ray
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    monkeypatch.setattr(host, "local_resources", lambda: {"cpu": 64.0, "gpu": 8.0})
    monkeypatch.setattr(host, "_shm_free", lambda: 64 * 2**20)
    with pytest.raises(SystemExit) as exc:
        run_cli.main([f])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "/dev/shm" in err and "--shm-size" in err
