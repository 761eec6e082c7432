"""One-trial command: run directory format, determinism, one-line errors, plugins, listing."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from benchmarks import train
from benchmarks.trial.store import RunDir

PY = sys.executable


def run_cli(args, tmp_path, capsys=None):
    return train.main(args)


def test_train_writes_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--dataset", "digits", "--model", "mlp", "--method", "erm", "--epochs", "3",
                       "--out", str(out)]) == 0
    run = RunDir(out)
    assert run.status == "done"
    assert run.config()["config"]["method"]["name"] == "erm"
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3]
    m = run.margins()
    assert m["test_margins"].shape == m["test_ids"].shape and len(m["test_ids"]) == 539
    assert "pool_margins" in m                      # ERM ranks train + val for the train-twice methods
    assert 0 <= run.result()["metrics"]["test/acc"] <= 1
    assert "test/acc" in capsys.readouterr().out


def test_same_seed_gives_identical_metrics(tmp_path):
    results = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        train.main(["--dataset", "digits", "--model", "cnn", "--method", "erm", "--epochs", "2",
                    "--seed", "3", "--out", str(out)])
        results.append(RunDir(out))
    a, b = (r.result()["metrics"] for r in results)
    keys = [k for k in a if "time" not in k]
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert np.array_equal(results[0].margins()["test_margins"], results[1].margins()["test_margins"])


@pytest.mark.parametrize("args, needle", [
    (["--method", "nope"], "unknown method 'nope'; known: "),
    (["--dataset", "nope"], "unknown dataset 'nope'; known: "),
    (["--model", "nope"], "unknown model 'nope'; known: "),
    (["--regime", "symmetric", "--noise-rate", "1.2"], "regime.rate"),
    (["--regime", "symmetric", "--noise-rate", "-0.1"], "regime.rate"),
    (["--regime", "longtail", "--imbalance", "0.5"], "regime.imbalance"),
    (["--lr", "0"], "train.lr"),
    (["--lr", "-1"], "train.lr"),
    (["--epochs", "0"], "train.epochs"),
    (["--train", "optimiser=adam"], "train.optimiser: unknown field"),
    (["--hp", "bogus=1"], "method.hparams.bogus: unknown field"),
])
def test_bad_input_is_one_line_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--dataset", "digits", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_plugin_method_usable_without_editing_the_repo(tmp_path):
    (tmp_path / "my_methods.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from molere.registry import register_method
        from molere.trainer import Trainer

        @register_method("label_smoothing")
        class LabelSmoothing(Trainer):
            """Cross-entropy with label smoothing 0.1."""
            def training_step(self, batch):
                return F.cross_entropy(self.model(batch.x), batch.y, label_smoothing=0.1)
    '''))
    env_path = f"{tmp_path}"
    listed = subprocess.run([PY, "-m", "benchmarks.list", "methods", "--plugin", "my_methods"],
                            capture_output=True, text=True, env={"PYTHONPATH": env_path, "PATH": ""})
    assert "label_smoothing" in listed.stdout and "label smoothing 0.1" in listed.stdout
    done = subprocess.run([PY, "-m", "benchmarks.train", "--method", "label_smoothing", "--plugin", "my_methods",
                           "--epochs", "1", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          env={"PYTHONPATH": env_path, "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert RunDir(tmp_path / "run").status == "done"


def test_list_shows_every_registry():
    out = subprocess.run([PY, "-m", "benchmarks.list"], capture_output=True, text=True).stdout
    for needle in ("methods:", "datasets:", "models:", "erm", "digits", "fashion_mnist", "cnn", "timm"):
        assert needle in out


def test_list_one_method_shows_every_option_with_default_allowed_values_and_description(capsys):
    from benchmarks import list as listing
    from benchmarks import catalog
    assert listing.main(["methods", "mwn"]) == 0
    out = capsys.readouterr().out
    for field in catalog.METHODS.get("mwn").Hparams.model_fields:
        assert f"  {field} = " in out, field
    assert 'meta_source = "val"\n      allowed: "val" | "train_per_class"\n      meta set = the dataset' in out
    assert "meta_lr = 0.001\n      allowed: float > 0\n      Adam learning rate of the weight net" in out
    assert "report: label 'MWN', role method" in out
    with pytest.raises(SystemExit) as exc:
        listing.main(["methods", "mwm"])
    assert exc.value.code == 2 and "did you mean 'mwn'?" in capsys.readouterr().err
