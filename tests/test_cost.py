"""The cost estimate of `--dry-run`: per trial and in total, from perf ratios, dataset sizes and epochs, with its
assumptions printed; the arithmetic of each part, the perf rows it picks, and a GPU's own perf JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import catalog  # noqa: F401  (registers everything)
from benchmarks import run as run_cli
from benchmarks.sweep import cost
from benchmarks.sweep.plan import expand_trials
from benchmarks.sweep.schema import load_sweep
from benchmarks.sweep.sizes import Sizes, split_sizes

ROOT = Path(__file__).resolve().parents[1]


def test_imagenet_dry_run_prints_per_trial_and_total_gpu_hours(capsys):
    assert run_cli.main([str(ROOT / "sweeps" / "imagenet.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith("GPU-h")]
    assert len(rows) == 51                                       # 36 + erm_train_val and 4 issue-21 baselines, 3 seeds
    total = next(line for line in out.splitlines() if line.startswith("estimate: 51 trials to run"))
    hours = float(total.split(", ")[1].split(" GPU-hours")[0])
    assert abs(hours - sum(float(r.split()[-2]) for r in rows)) < 0.1        # the total is the trials' sum
    assert "H100" in total and "assumptions:" in out and "timm's RTX 3090" in out and "perf rows used" in out


def fake_rates(**ratios) -> cost.Rates:
    return cost.Rates("test GPU", True, {("vit_b16", k, "bf16"): v for k, v in {"erm": 1.0, **ratios}.items()},
                      {("vit_b16", "bf16"): 100.0}, perf_size=224)


def trials_of(tmp_path, methods: dict, **train):
    spec = {"name": "c", "results_dir": str(tmp_path / "r"), "model": {"name": "timm/vit_tiny_patch16_224"},
            "datasets": [{"name": "imagenet", "root": str(tmp_path), "options": {"image_size": 224}}],
            "methods": methods, "train": {"epochs": 2, "batch_size": 64, "precision": "bf16", **train},
            "resources": {"cpu": 8, "gpu": 1}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    return {t.labels["method"]: t for t in expand_trials(load_sweep(tmp_path / "c.yaml"))}


def test_each_part_of_a_trial(tmp_path):
    sizes = Sizes(train=1000, test=100, val=200, selection=100, input_shape=(3, 112, 112), num_classes=10)
    t = trials_of(tmp_path, {"erm": {}, "mwn": {}, "molere": {"meta_warmup_epochs": 1}}, eval_every=1)
    rates = fake_rates(mwn=3.0, molere=2.0)
    rate = 100.0 * (224 / 112) ** 2                                     # pixels: 4x the images/s at half the side
    f = cost.FORWARD_COST
    mwn = cost.trial_cost(t["mwn"], sizes, rates)
    assert mwn.parts["training"] == pytest.approx(2 * 1000 * 3.0 / rate)
    assert mwn.parts["evaluation"] == pytest.approx(2 * (100 + 100 + 200) * f / rate)
    assert mwn.parts["start-up"] == cost.GPU_FIXED_S and "out-of-fold models" not in mwn.parts
    assert "out-of-fold models" not in cost.trial_cost(t["erm"], sizes, rates).parts   # none declared
    erm = cost.trial_cost(t["erm"], sizes, rates, oof_folds=[2, 3])
    assert erm.parts["out-of-fold models"] == pytest.approx((2 * 1200 * (1 + 2) + 2 * 1200 * f) / rate)
    mol = cost.trial_cost(t["molere"], sizes, rates)
    assert mol.parts["training"] == pytest.approx(2 * 1080 * (2.0 - cost.PERF_POOL * f) / rate)   # pool minus δ
    assert mol.parts["pool passes"] == pytest.approx(2 * 1200 * f / rate)  # before epoch 1 and before the re-split
    assert mol.parts["evaluation"] == pytest.approx(2 * 200 * f / rate)    # no val/*: val is training data
    longer = trials_of(tmp_path / "x", {"mwn": {}}, epochs=4, eval_every=1)["mwn"]
    assert cost.trial_cost(longer, sizes, rates).parts["training"] == pytest.approx(2 * mwn.parts["training"])


def test_molere_passes_and_evaluations_follow_the_trainers_rules(tmp_path):
    assert cost.molere_passes({"meta_warmup_epochs": 2}, 5) == 4               # = tests/test_eval_budget.py's count
    assert cost.molere_passes({"meta_warmup_epochs": None, "warmup_fraction": 0.25}, 10) == 8   # was 11 before
    sizes = Sizes(train=1_000_000, test=50_000, selection=100_000, input_shape=(3, 224, 224))
    t = trials_of(tmp_path, {"erm": {}}, epochs=10, eval_every="auto", eval_selection="last")["erm"]
    from molere.registry import METHODS
    # auto: 150k / 3 / (0.05 x 1M) = 1 -> every epoch; the selection split at the last one only
    n = cost.evaluated_images(t.config, METHODS.get("erm"), sizes, 1_000_000)
    assert n == 10 * 50_000 + 100_000


def test_perf_rows_follow_the_look_ahead_and_fall_back_honestly():
    rates = fake_rates(**{"lrw, head-only": 1.1, "mwn, head-only": 1.3, "fsr": 2.0, "lrw": 1.6, "lrw_easy": 1.7})
    defaults = lambda m: catalog.METHODS.get(m).Hparams().model_dump()   # noqa: E731
    pick = lambda m, **hp: cost.method_ratio(rates, "vit_base_patch16_224", m, {**defaults(m), **hp}, "bf16",  # noqa: E731
                                             defaults(m))
    assert pick("lrw_easy", lookahead_scope="head") == (1.1, "vit_b16/lrw, head-only [bf16]")
    assert pick("lrw_easy")[0] == 1.7 and pick("lrw")[0] == 1.6
    assert pick("fsr")[0] == 2.0                                        # head-only by default: its own row
    assert pick("l2rw", lookahead_scope="head")[0] == 1.3               # no row of its own: the nearest
    assert cost.method_ratio(rates, "vit_base_patch16_224", "plugin_method", {}, "bf16") == (1.0, "no perf row: ERM's cost")


def test_a_gpus_own_perf_json_names_it_and_sets_the_rates(tmp_path, capsys):
    perf = {"device": "cuda", "gpu": "NVIDIA H200", "settings": {"vit_b16": {"image_size": 224, "rows": {
        "erm [bf16]": {"images_per_s": 2000.0}, "mwn [bf16]": {"images_per_s": 500.0},
        "mwn, head-only [bf16]": {"images_per_s": 1000.0}}}}}
    (tmp_path / "perf.json").write_text(json.dumps(perf))
    rates = cost.load_rates(True, str(tmp_path / "perf.json"))
    assert rates.where == "NVIDIA H200" and cost.gpu_rate(rates, "vit_base_patch16_224", 448, "bf16") == 500.0
    assert cost.method_ratio(rates, "vit_base_patch16_224", "mwn", {}, "bf16")[0] == 4.0
    assert run_cli.main([str(ROOT / "sweeps" / "imagenet.yaml"), "--dry-run", "--cost-perf",
                         str(tmp_path / "perf.json")]) == 0
    assert "GPU-hours on NVIDIA H200" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        run_cli.main([str(ROOT / "sweeps" / "imagenet.yaml"), "--dry-run", "--cost-perf", str(tmp_path / "no.json")])
    assert exc.value.code == 2 and "--cost-perf" in capsys.readouterr().err


def test_sizes_follow_the_options_without_reading_the_data(tmp_path):
    from benchmarks.data.load import DatasetConfig
    inet = split_sizes(DatasetConfig(name="imagenet", root="/nowhere", options={"val_fraction": 0.02}))
    assert inet.val == round(1_281_167 * 0.02) and inet.test == 50_000 and inet.num_classes == 1000
    assert inet.train + inet.selection + inet.val == 1_281_167 and inet.selection == round(0.1 * (1_281_167 - inet.val))
    iwc = split_sizes(DatasetConfig(name="iwildcam", root="/nowhere", options={"val_split": "id_val"}))
    assert iwc.val == 7_314 and iwc.extra == {"id_test": 8_154, "ood_val": 14_961}
    digits = split_sizes(DatasetConfig(name="digits"))                  # small: loaded, exact
    assert digits.train + digits.val + digits.selection + digits.test == 1797 and digits.load_s > 0
    with pytest.raises(ValueError, match="sizes unknown"):
        split_sizes(DatasetConfig(name="fashion_mnist", root=str(tmp_path / "absent")))


def test_cpu_estimate_times_this_machine(tmp_path, capsys):
    spec = {"name": "q", "results_dir": str(tmp_path / "r"), "datasets": [{"name": "digits"}],
            "model": {"name": "mlp", "options": {"hidden": [16]}}, "methods": {"erm": {}, "lrw": {}},
            "train": {"epochs": 2, "batch_size": 64}, "resources": {"cpu": 1}}
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(spec))
    assert run_cli.main([str(tmp_path / "q.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "CPU-minutes on this CPU" in out and "timed here" in out
    assert len([line for line in out.splitlines() if line.endswith(" min")]) == 3   # erm, lrw, erm_train_val
