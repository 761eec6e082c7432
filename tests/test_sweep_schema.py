"""Sweep files: validation (a corpus of malformed files), overrides, filters, expansion, dry runs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import run
from benchmarks.sweep import host
from benchmarks.sweep.search_space import expand
from benchmarks.cli import parse_only
from benchmarks.sweep.plan import expand_trials, select
from benchmarks.sweep.schema import apply_override, load_sweep
from molere.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))

BASE = {"name": "t", "datasets": [{"name": "digits"}], "model": {"name": "mlp"},
        "methods": {"erm": {}, "mwn": {}}, "seeds": [0], "train": {"epochs": 1}}


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything is launched (the scheduler's entry points replaced)."""
    from benchmarks.sweep import scheduler

    def launched(*a, **k):
        raise AssertionError("a trial was launched")
    monkeypatch.setattr(scheduler, "run_trials", launched)
    monkeypatch.setattr(scheduler, "start_ray", launched)


def write(tmp_path, data, name="sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_(**changes) -> dict:
    d = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        d[key] = value
    return d


def without(key) -> dict:
    d = dict(BASE)
    d.pop(key)
    return d


MALFORMED = [
    ("typo_top", with_(seed=[0]), "seed: unknown field (did you mean 'seeds'?"),
    ("typo_train", with_(train={"epoch": 1}), "train.epoch: unknown field (did you mean 'epochs'?"),
    ("typo_dataset_key", with_(datasets=[{"nme": "digits"}]), "datasets.0.nme: unknown field"),
    ("typo_hparam", with_(methods={"mwn": {"meta_lrr": 0.1}}), "methods.mwn.meta_lrr: unknown field (did you mean 'meta_lr'?"),
    ("wrong_type_epochs", with_(train={"epochs": "many"}), "train.epochs: Input should be a valid integer"),
    ("wrong_type_seeds", with_(seeds="0,1"), "seeds: Input should be a valid list"),
    ("wrong_type_hparam", with_(methods={"mwn": {"meta_lr": "fast"}}), "methods.mwn.meta_lr: Input should be a valid number"),
    ("unknown_method", with_(methods={"mwm": {}}), "methods.mwm: unknown method 'mwm'; did you mean 'mwn'? known:"),
    ("unknown_dataset", with_(datasets=[{"name": "digitz"}]),
     "datasets.digitz: unknown dataset 'digitz'; did you mean 'digits'? known:"),
    ("unknown_model", with_(model={"name": "mpl"}), "model.name: unknown model 'mpl'; did you mean 'mlp'? known:"),
    ("bad_model_option", with_(model={"name": "mlp", "options": {"hiden": [3]}}), "model.options.hiden: unknown field"),
    ("bad_dataset_option", with_(datasets=[{"name": "digits", "options": {"val_fraction": 2}}]),
     "datasets.digits.options.val_fraction: Input should be less than 1"),
    ("negative_cpu", with_(resources={"cpu": -1}), "resources.cpu: Input should be greater than 0"),
    ("negative_gpu", with_(resources={"gpu": -0.5}), "resources.gpu: Input should be greater than or equal to 0"),
    ("typo_resources", with_(resources={"cpus": 2}), "resources.cpus: unknown field (did you mean 'cpu'?"),
    ("uniform_reversed", with_(methods={"mwn": {"meta_lr": {"uniform": [1, 0]}}}), "methods.mwn.meta_lr: {uniform: [lo, hi]} needs lo < hi"),
    ("loguniform_zero", with_(methods={"mwn": {"meta_lr": {"loguniform": [0, 1]}}}), "methods.mwn.meta_lr: {loguniform: [lo, hi]} needs 0 < lo"),
    ("grid_empty", with_(methods={"mwn": {"hidden": {"grid": []}}}), "methods.mwn.hidden: {grid: [...]} needs a non-empty list"),
    ("randint_floats", with_(methods={"mwn": {"hidden": {"randint": [1.5, 9]}}}), "methods.mwn.hidden: {randint: [lo, hi]} needs integers"),
    ("drawn_value_invalid", with_(methods={"mwn": {"meta_lr": {"choice": [0.1, -1.0]}}}, search={"num_samples": 8}),
     "methods.mwn.meta_lr: Input should be greater than 0"),
    ("typo_search_space", with_(methods={"mwn": {"hidden": {"gird": [10, 20]}}}),
     "methods.mwn.hidden: unknown search space 'gird' (did you mean 'grid'?"),
    ("empty_methods", with_(methods={}), "methods: Dictionary should have at least 1 item"),
    ("empty_datasets", with_(datasets=[]), "datasets: List should have at least 1 item"),
    ("empty_seeds", with_(seeds=[]), "seeds: List should have at least 1 item"),
    ("duplicate_dataset", with_(datasets=[{"name": "digits"}, {"name": "digits"}]), "datasets: duplicate dataset entries ['digits']"),
    ("duplicate_seeds", with_(seeds=[0, 0]), "seeds: duplicate seeds"),
    ("duplicate_regime", with_(regimes=[{"kind": "clean"}, {"kind": "clean"}]), "regimes: duplicate regimes ['clean']"),
    ("bad_regime_rate", with_(regimes=[{"kind": "symmetric", "rate": 1.5}]), "regimes.0.rate: must be in [0, 1)"),
    ("bad_wandb_mode", with_(wandb={"mode": "cloud"}), "wandb.mode: Input should be 'auto', 'offline', 'online' or 'disabled'"),
    ("bad_search", with_(search={"num_samples": 0}), "search.num_samples: Input should be greater than 0"),
    ("missing_datasets", without("datasets"), "datasets: required field missing"),
    ("bad_plugin", with_(plugins=["no_such_plugin_module"]), "plugins: plugin 'no_such_plugin_module' could not be imported"),
    ("bad_name", with_(name="a b/c"), "name: String should match pattern"),
    ("per_dataset_train", with_(datasets=[{"name": "digits", "train": {"lr": 0}}]), "datasets.digits.train.lr: Input should be greater than 0"),
    ("missing_root", with_(datasets=[{"name": "cifar10", "root": "/nonexistent/cifar"}]),
     "datasets.cifar10.root: dataset 'cifar10': /nonexistent/cifar not found"),
    ("not_a_mapping", "- just\n- a list\n", "the file must hold a mapping"),
    ("bad_yaml", "name: [unclosed\n", "not valid YAML"),
]


@pytest.mark.parametrize("case,data,expected", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_sweep_is_one_line_exit_2_and_launches_nothing(case, data, expected, tmp_path, capsys, no_launch,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, data, f"{case}.yaml")
    with pytest.raises(SystemExit) as exc:
        run.main([str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"benchmarks.run: error: {path}: "), err
    assert expected in err, err
    assert not (tmp_path / "results").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def test_corpus_is_large_enough():
    assert len(MALFORMED) >= 20


def test_set_overrides_any_field_and_by_name(tmp_path):
    path = write(tmp_path, with_(datasets=[{"name": "digits"}, {"name": "mnist1d"}]))
    sweep = load_sweep(path, ["train.epochs=3", "datasets.mnist1d.options.num_samples=500",
                              "datasets.0.root=/x", "seeds=[4, 5]", "methods.mwn.meta_lr=0.01"])
    assert sweep.train.epochs == 3 and sweep.seeds == [4, 5]
    assert sweep.datasets[1].options == {"num_samples": 500} and sweep.datasets[0].root == "/x"
    assert sweep.methods["mwn"] == {"meta_lr": 0.01}
    with pytest.raises(ConfigError, match="train.epochs: Input should be greater than 0"):
        load_sweep(path, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="'cifar' is neither an index"):
        load_sweep(path, ["datasets.cifar.root=/x"])


def test_apply_override_creates_missing_blocks():
    raw = {"name": "x"}
    apply_override(raw, "wandb.mode=disabled")
    apply_override(raw, "methods.mwn={meta_lr: 0.1}")
    assert raw == {"name": "x", "wandb": {"mode": "disabled"}, "methods": {"mwn": {"meta_lr": 0.1}}}


def test_full_data_override_of_fashion_mnist_sweep():
    path = ROOT / "sweeps" / "fashion_mnist.yaml"
    sweep = load_sweep(path, ["datasets.fashion_mnist.options.train_subset=null", "train.epochs=30"])
    assert sweep.datasets[0].options["train_subset"] is None and sweep.train.epochs == 30
    full = {t.trial_id for t in expand_trials(sweep)}
    assert full.isdisjoint(t.trial_id for t in expand_trials(load_sweep(path)))


def test_expansion_counts_grid_and_draws_independent_of_seeds(tmp_path):
    spaces = {"meta_lr": {"loguniform": [1e-4, 1e-2]}, "hidden": {"grid": [10, 20, 30]}}
    d = with_(methods={"mwn": spaces}, seeds=[0, 1], search={"num_samples": 2, "hparam_seed": 7},
              regimes=[{"kind": "clean"}, {"kind": "symmetric", "rate": 0.4}])
    plan = expand_trials(load_sweep(write(tmp_path, d)))
    trials = [t for t in plan if t.labels["method"] == "mwn"]
    assert len(trials) == 2 * 3 * 2 * 2            # regimes x grid x draws x seeds
    refs = [t for t in plan if t.labels["method"] != "mwn"]   # its same-data reference, once per regime x seed
    assert len(refs) == 2 * 2 and all(t.reference_only and t.labels["method"] == "erm_train_val" for t in refs)
    by_seed = {s: sorted((t.config.method.hparams["meta_lr"], t.config.method.hparams["hidden"])
                         for t in trials if t.labels["seed"] == s) for s in (0, 1)}
    assert by_seed[0] == by_seed[1]                 # every configuration on every seed
    lrs = {t.config.method.hparams["meta_lr"] for t in trials}
    assert len(lrs) == 2 and all(1e-4 <= v < 1e-2 for v in lrs) and 1e-3 in lrs   # draw 0: MWN's default
    meta_lrs = lambda d: {t.config.method.hparams.get("meta_lr") for t in expand_trials(load_sweep(write(tmp_path, d)))
                          if t.labels["method"] == "mwn"}   # noqa: E731
    d["seeds"] = [5]
    assert meta_lrs(d) == lrs
    d["search"]["hparam_seed"] = 8
    assert meta_lrs(d) != lrs


def test_search_spaces_draw_within_bounds_and_types():
    hp = {"a": {"uniform": [0.5, 1.0]}, "b": {"randint": [2, 4]}, "c": {"choice": ["x", 3]}, "d": 1}
    draws = expand(hp, method="m", hparam_seed=0, num_samples=50)
    assert len(draws) == 50 and all(d["d"] == 1 for d in draws)
    assert all(0.5 <= d["a"] < 1.0 and type(d["a"]) is float for d in draws)
    assert {d["b"] for d in draws} == {2, 3} and all(type(d["b"]) is int for d in draws)
    assert {d["c"] for d in draws} == {"x", 3}
    assert expand(hp, method="m", hparam_seed=0, num_samples=50) == draws
    assert expand({"g": {"grid": [1, 2]}}, method="m", hparam_seed=0, num_samples=5) == [{"g": 1}, {"g": 2}]


def test_train_twice_methods_get_their_erm_trial_once(tmp_path):
    d = with_(methods={"lrw_easy": {}, "lrw_hard": {}, "lrw_random": {}}, seeds=[0, 1])
    trials = expand_trials(load_sweep(write(tmp_path, d)))
    erm = [t for t in trials if t.labels["method"] == "erm"]
    pooled = [t for t in trials if t.labels["method"] == "erm_train_val"]   # their same-data reference
    assert len(trials) == 10 and len(erm) == 2 and len(pooled) == 2
    assert {t.erm_id for t in trials} == {t.trial_id for t in erm}
    assert {t.same_data_id for t in trials if t.labels["method"].startswith("lrw")} == {t.trial_id for t in pooled}
    kept = select(trials, parse_only(["method=lrw_easy", "seed=1"]))
    assert sorted(t.labels["method"] for t in kept) == ["erm", "erm_train_val", "lrw_easy"]
    assert all(t.labels["seed"] == 1 for t in kept)
    with pytest.raises(ConfigError, match="--only method: mwn not in this sweep"):
        select(trials, parse_only(["method=mwn"]))
    with pytest.raises(ConfigError, match="--only: expected KEY=V1,V2"):
        parse_only(["colour=red"])


def test_dry_run_prints_plan_and_store_status(tmp_path, capsys, no_launch):
    path = write(tmp_path, with_(results_dir=str(tmp_path / "res"), seeds=[0, 1]))
    assert run.main([str(path), "--dry-run", "--only", "method=mwn"]) == 0
    out = capsys.readouterr().out
    assert out.count(" mwn ") == 2 and " erm " not in out and "4 trials: 0 done" in out
    assert out.count(" erm_train_val ") == 2 and out.count("(reference)") == 2   # mwn's same-data reference
    assert "sizes (digits, clean, seed 0): train " in out
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_dry_run_of_every_shipped_sweep(path, capsys, no_launch, tmp_path):
    assert run.main([str(path), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    n = int(out.strip().splitlines()[-1].split(": ")[1].split()[0])
    lines = [line for line in out.strip().splitlines()   # the plan: its rows, a header and the count
             if not line.startswith(("search space (", "sizes (", "estimate:", "assumptions:", "  - "))]
    assert n >= 12 and len(lines) == n + 2
    sweep = load_sweep(path)
    assert sum(line.startswith("sizes (") for line in out.splitlines()) == len(sweep.datasets) * len(sweep.regimes)   # realised sizes, or why unknown


def test_shipped_embedded_sweep_covers_every_registered_method():
    from benchmarks import catalog
    sweep = load_sweep(ROOT / "sweeps" / "embedded.yaml")
    builtin = [n for n in catalog.METHODS.names()   # not the plugins other tests registered
               if catalog.METHODS.get(n).__module__.split(".")[0] in ("baselines", "molere")]
    assert sorted(sweep.methods) == builtin


def test_missing_data_stops_before_ray_and_dry_run_warns(tmp_path, capsys, no_launch):
    path = ROOT / "sweeps" / "imagenet.yaml"
    root = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exc:
        run.main([str(path), "--results", str(tmp_path), "--set", f"datasets.imagenet.root={root}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"datasets.imagenet.root: dataset 'imagenet': {root} not found; download ILSVRC2012" in err
    assert run.main([str(path), "--dry-run", "--results", str(tmp_path)]) == 0
    assert "warning: datasets.imagenet.root" in capsys.readouterr().err


def test_dry_run_with_fake_data_roots_has_no_warning(tmp_path, capsys, no_launch):
    from tests import fakes
    cifar, inet, cloth = tmp_path / "cifar", tmp_path / "imagenet", tmp_path / "clothing"
    fakes.make_fake_cifar100(cifar)
    fakes.make_fake_imagenet(inet, train_per_class=1, val_per_class=1)
    fakes.make_fake_clothing1m(cloth, train_per_class=1)
    for name, sets in (("cifar100", [f"datasets.cifar100.root={cifar}"]),
                       ("imagenet", [f"datasets.imagenet.root={inet}"]),
                       ("clothing1m", [f"datasets.clothing1m.root={cloth}"])):
        args = [str(ROOT / "sweeps" / f"{name}.yaml"), "--dry-run", "--results", str(tmp_path / "r")]
        assert run.main(args + [x for s in sets for x in ("--set", s)]) == 0
        err = capsys.readouterr().err
        assert "warning: datasets" not in err          # (absent pretrained weights are warned about separately)


# ---- hostile inputs: each exits 2 with one short line, no traceback, before anything starts ----------
BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}' if p else '1'] * 9)}]\n"
               for p, a in zip([None, *"abcdefgh"], "abcdefghi"))
TEXT = yaml.safe_dump(BASE)


def _text(text: str | bytes):
    def make(tmp_path):
        path = tmp_path / "sweep.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return [str(path)]
    return make


def _over(*sets, base=TEXT):
    def make(tmp_path):
        return _text(base)(tmp_path) + [x for s in sets for x in ("--set", s)]
    return make


def _plugin(source: str):
    def make(tmp_path):
        name = f"hostile_plugin_{abs(hash(source)) % 10**8}"
        (tmp_path / f"{name}.py").write_text(source)
        sys.path.insert(0, str(tmp_path))
        sys.modules.pop(name, None)
        return _text(yaml.safe_dump({**BASE, "plugins": [name]}))(tmp_path)
    return make


def _results_file(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder\n")
    return _text(TEXT)(tmp_path) + ["--results", str(tmp_path / "taken")]


HOSTILE = [
    ("sweep_is_directory", lambda tmp_path: [str(tmp_path)], "is a directory"),
    ("latin1_text", _text("name: caf\u00e9\n".encode("latin-1")), "not UTF-8 text (byte 0xe9"),
    ("utf16_text", _text(TEXT.encode("utf-16")), "not UTF-8 text"),
    ("utf16_without_bom", _text(TEXT.encode("utf-16-le")), "NUL bytes"),
    ("binary_garbage", _text(bytes(range(256)) * 8), "not UTF-8 text"),
    ("empty_file", _text(""), "the file must hold a mapping"),
    ("too_large", _text("# " + "x" * (1 << 20) + "\n" + TEXT), "larger than 1 MiB"),
    ("python_tag", _text(TEXT + "x: !!python/object/apply:os.system ['touch pwned']\n"), "not valid YAML"),
    ("deep_nesting", _text("name: " + "[" * 5000 + "]" * 5000 + "\n"), "nested too deeply"),
    ("duplicate_method", _text(TEXT.replace("  erm: {}\n", "  erm: {}\n  erm: {lr: 1}\n")), "duplicate key 'erm'"),
    ("duplicate_name", _text("name: a\n" + TEXT), "duplicate key 'name'"),
    ("alias_bomb", _text(BOMB + TEXT), "YAML aliases expand to more than"),
    ("alias_bomb_timm_kwargs", _text(BOMB.replace("i: &i", "bomb: &i") + TEXT.replace(
        "model:\n  name: mlp\n", "model:\n  name: timm/resnet18\n  options:\n    kwargs: {x: *i}\n")),
     "YAML aliases expand to more than"),
    ("recursive_alias", _text("r: &r [*r]\n" + TEXT), "YAML aliases expand to more than"),
    ("set_unclosed_list", _over("train.epochs=[1"), "--set train.epochs: not valid YAML"),
    ("set_bad_key", _over("=3"), "--set: bad key"),
    ("set_into_scalar", _over("name.x=1"), "name: Input should be a valid string"),
    ("set_huge_value", _over("train.epochs=" + "9x" * 20000), "train.epochs: Input should be a valid integer"),
    ("set_huge_overflow", _over("train.lr=1e400"), "train.lr: Input should be a finite number"),
    ("plugin_raises", _plugin("raise RuntimeError('plugin exploded')\n"), "could not be imported: RuntimeError"),
    ("plugin_reregisters_erm", _plugin("from molere.registry import register_method\n"
                                       "@register_method('erm')\nclass Other: pass\n"), "'erm' is already registered"),
    ("plugin_syntax_error", _plugin("def broken(:\n"), "could not be imported: SyntaxError"),
    ("plugins_not_a_list", _over("plugins=some_module"), "plugins: a list of importable module names"),
    ("results_is_a_file", _results_file, "results_dir: cannot create or write"),
    ("results_unwritable", lambda tmp_path: _text(TEXT)(tmp_path) + ["--results", "/proc/no-results-here"],
     "results_dir: cannot create or write"),
    ("results_not_a_string", _over("results_dir=[1]"), "results_dir: Input should be a valid string"),
    ("unknown_timm_arch", _over("model.name=timm/resnett18"), "unknown timm architecture 'resnett18'"),
    ("unknown_timm_arch_option", _over("model={name: timm, options: {arch: nosuchnet}}"),
     "unknown timm architecture 'nosuchnet'"),
    ("timm_on_vector_data", _over("model.name=timm/resnet18", "datasets=[{name: mnist1d}]"),
     "model on datasets.mnist1d: model 'timm' needs image input"),
    ("cnn_on_vector_data", _over("model.name=cnn", "datasets=[{name: mnist1d}]"), "model 'cnn' needs image input"),
    ("lr_inf", _over("train.lr=.inf"), "train.lr: Input should be a finite number"),
    ("lr_nan", _over("train.lr=.nan"), "train.lr: Input should be a finite number"),
    ("hparam_inf", _over("methods.mwn.meta_lr=.inf"), "methods.mwn.meta_lr: Input should be a finite number"),
    ("seed_1e23", _over("seeds=[1e23]"), "seeds.0: Input should be a valid integer"),
    ("seed_2_32", _over("seeds=[4294967296]"), "seeds must be integers in [0, 2**32)"),
    ("device_cuda_without_gpu_resource", _over("train.device=cuda"), "train.device 'cuda' needs resources.gpu > 0"),
    ("device_cuda_without_gpu", _over("train.device=cuda", "resources.gpu=1"),
     "asks for cpu=1, gpu=1 but this machine has 2 CPUs, 0 GPUs"),
    ("gpu_1_without_gpu", _over("resources.gpu=1"), "but this machine has 2 CPUs, 0 GPUs; lower resources.gpu"),
    ("gpu_1_5", _over("resources.gpu=1.5"), "resources.gpu: a fraction of one GPU"),
    ("cpu_64", _over("resources.cpu=64"), "asks for cpu=64, gpu=0 but this machine has 2 CPUs"),
    ("time_limit_zero", _over("resources.time_limit_s=0"), "resources.time_limit_s: Input should be greater than 0"),
    ("time_limit_inf", _over("resources.time_limit_s=.inf"), "resources.time_limit_s: Input should be a finite"),
    ("only_unknown_key", lambda tmp_path: _text(TEXT)(tmp_path) + ["--only", "colour=red"], "--only: expected KEY"),
    ("only_unknown_value", lambda tmp_path: _text(TEXT)(tmp_path) + ["--only", "method=nope"], "--only method: nope"),
]


@pytest.mark.parametrize("case,make,expected", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_one_short_line_exit_2(case, make, expected, tmp_path, capsys, no_launch, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(host, "local_resources", lambda: {"cpu": 2.0, "gpu": 0.0})   # a 2-CPU machine, no GPU
    monkeypatch.setattr(sys, "path", list(sys.path))
    argv = make(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run.main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.encode()) < 2048 and "Traceback" not in err, err[:3000]
    assert len(err.strip().splitlines()) == 1 and err.startswith("benchmarks.run: error: "), err
    assert expected in err, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "pwned").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def _train_out_file(tmp_path):
    (tmp_path / "out").write_text("")
    return ["--out", str(tmp_path / "out")]


def _truncated_plan(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "plan.json").write_text('[{"trial_id": "abc", "lab')
    return [str(tmp_path / "s")]


OTHER_CLIS = [
    ("train", "data_opt_unclosed", lambda t: ["--data-opt", "x=[1"], "--data-opt x: not valid YAML"),
    ("train", "missing_plugin", lambda t: ["--plugin", "no_such_plugin_mod"], "plugin 'no_such_plugin_mod' could not"),
    ("train", "out_is_a_file", _train_out_file, "--out: "),
    ("train", "seed_too_large", lambda t: ["--seed", str(2**64)], "seed: Input should be less than 4294967296"),
    ("train", "lr_inf", lambda t: ["--lr", "inf"], "train.lr: Input should be a finite number"),
    ("report", "truncated_plan", _truncated_plan, "plan.json: unreadable (JSONDecodeError"),
]


@pytest.mark.parametrize("prog,case,make,expected", OTHER_CLIS, ids=[f"{c[0]}-{c[1]}" for c in OTHER_CLIS])
def test_hostile_input_to_train_and_report_is_one_line_exit_2(prog, case, make, expected, tmp_path, capsys,
                                                              monkeypatch):
    from benchmarks import train
    from benchmarks.report.__main__ import main as report_main
    monkeypatch.chdir(tmp_path)
    argv = make(tmp_path)
    with pytest.raises(SystemExit) as exc:
        code = (train.main if prog == "train" else report_main)(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert len(err.encode()) < 2048 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"benchmarks.{prog}: error: ") and expected in err, err
    assert not (tmp_path / "s" / "report").exists() and not list(tmp_path.glob("run-*"))


def test_hostile_corpus_is_large_enough():
    assert len(MALFORMED) + len(HOSTILE) + len(OTHER_CLIS) >= 40 + len(MALFORMED)


@pytest.mark.parametrize("train_args, sweep_change, where_train, where_sweep", [
    (["--method", "mwn", "--hp", "meta_lrr=0.1"], {"methods": {"mwn": {"meta_lrr": 0.1}}},
     "method.hparams.meta_lrr", "methods.mwn.meta_lrr"),
    (["--train", "epoch=1"], {"train": {"epoch": 1}}, "train.epoch", "train.epoch"),
    (["--method", "mwm"], {"methods": {"mwm": {}}}, "", "methods.mwm"),
])
def test_same_bad_key_same_message_through_train_and_a_sweep_file(train_args, sweep_change, where_train,
                                                                    where_sweep, tmp_path, capsys, no_launch):
    """One error path: the message after the field's location (which names where the key was written) is the
    same, "did you mean" included, whether the key came from benchmarks.train or from a sweep file."""
    from benchmarks import train
    with pytest.raises(SystemExit):
        train.main(["--dataset", "digits", *train_args])
    from_train = capsys.readouterr().err.strip().removeprefix("benchmarks.train: error: ")
    path = write(tmp_path, with_(**sweep_change))
    with pytest.raises(SystemExit):
        run.main([str(path)])
    from_sweep = capsys.readouterr().err.strip().removeprefix(f"benchmarks.run: error: {path}: ")
    assert "did you mean" in from_train and len(from_train.splitlines()) == 1
    assert from_train.removeprefix(where_train).lstrip(": ") == from_sweep.removeprefix(where_sweep).lstrip(": ")
    assert from_train.startswith(where_train) and from_sweep.startswith(where_sweep)
