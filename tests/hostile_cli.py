"""A corpus of malformed command lines for every entry point, each with the text its one-line error must hold.

    python -m tests.hostile_cli [--verbose]     # runs each as a subprocess; counts tracebacks and non-one-line exits

`tests/test_cli_hostile.py` runs the same corpus in-process.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SWEEP = {"name": "s", "datasets": [{"name": "digits"}], "model": {"name": "mlp", "options": {"hidden": [8]}},
         "methods": {"erm": {}}, "seeds": [0], "train": {"epochs": 1}, "resources": {"cpu": 1},
         "wandb": {"mode": "disabled"}}
UNSAFE_YAML = "name: s\nwandb: !!python/object/apply:os.system ['touch pwned']\n"


def _file(t: Path, name: str, text: str | bytes) -> Path:
    p = t / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _sweep(t: Path, **over) -> str:
    return str(_file(t, "sweep.yaml", yaml.safe_dump({**SWEEP, "results_dir": str(t / "results"), **over})))


def _store(t: Path, plan: str | None = "[]", sweep_yaml: str | None = "name: s\n") -> str:
    """A sweep directory of the result store with the given plan.json and sweep.yaml texts (plan None: a folder)."""
    if plan is None:
        (t / "st" / "plan.json").mkdir(parents=True)
    else:
        _file(t, "st/plan.json", plan)
    (t / "st" / "trials").mkdir(exist_ok=True)
    if sweep_yaml is not None:
        _file(t, "st/sweep.yaml", sweep_yaml)
    return str(t / "st")


def _plugin(t: Path, name: str, text: str) -> str:
    _file(t, f"plug/{name}.py", text)
    sys.path.insert(0, str(t / "plug"))        # in-process runs; subprocesses get it through PYTHONPATH
    return name


NOWHERE = "/proc/no_such_dir/x"                # a folder that cannot be created, even by root

# (program, case, argv maker (tmp dir -> argv), text the one error line must contain)
CASES = [
    ("run", "no_args", lambda t: [], "the following arguments are required: sweep"),
    ("run", "missing_file", lambda t: [str(t / "nope.yaml")], "file not found"),
    ("run", "directory", lambda t: [str(t)], "is a directory"),
    ("run", "unsafe_yaml", lambda t: [str(_file(t, "u.yaml", UNSAFE_YAML))], "not valid YAML"),
    ("run", "binary_file", lambda t: [str(_file(t, "b.yaml", b"\xff\xfe\x00garbage"))], "not UTF-8"),
    ("run", "set_without_equals", lambda t: [_sweep(t), "--set", "train.epochs"], "--set"),
    ("run", "only_unknown_key", lambda t: [_sweep(t), "--only", "colour=red"], "--only"),
    ("run", "only_unknown_method", lambda t: [_sweep(t), "--only", "method=nope"], "nope"),
    ("run", "results_uncreatable", lambda t: [_sweep(t), "--results", NOWHERE], "results_dir: cannot create or write"),
    ("run", "too_many_cpus", lambda t: [_sweep(t), "--set", "resources.cpu=4096"], "resources: each trial asks"),
    ("run", "address_bad_port", lambda t: [_sweep(t), "--address", "127.0.0.1:99999"], "--address"),
    ("run", "address_unknown_host", lambda t: [_sweep(t), "--address", "no-such-host.invalid:6379"], "--address"),
    ("run", "time_limit_negative", lambda t: [_sweep(t), "--set", "resources.time_limit_s=-5"],
     "resources.time_limit_s"),
    ("train", "epochs_not_int", lambda t: ["--epochs", "x"], "argument --epochs: invalid int value"),
    ("train", "out_uncreatable", lambda t: ["--out", NOWHERE], "--out: cannot create"),
    ("train", "out_under_a_file", lambda t: ["--out", str(_file(t, "f", "")) + "/run"], "--out: cannot create"),
    ("train", "out_is_a_file", lambda t: ["--out", str(_file(t, "f", ""))], "--out: "),
    ("train", "store_is_a_file", lambda t: ["--store", str(_file(t, "f", ""))], "--results: "),   # --store: old name
    ("train", "store_missing", lambda t: ["--store", str(t / "nope")], "--results: "),
    ("train", "plugin_missing", lambda t: ["--plugin", "no_such_plugin_mod"], "plugin 'no_such_plugin_mod'"),
    ("train", "plugin_syntax_error", lambda t: ["--plugin", _plugin(t, "bad_syntax_a", "def f(:\n")],
     "SyntaxError"),
    ("train", "data_opt_no_equals", lambda t: ["--data-opt", "subset"], "--data-opt: expected key=value"),
    ("train", "hp_python_tag", lambda t: ["--hp", "x=!!python/object/apply:os.system ['true']"], "--hp x: "),
    ("train", "root_missing", lambda t: ["--dataset", "fashion_mnist", "--root", str(t / "nope")], "fashion"),
    ("train", "device_cuda_without_gpu", lambda t: ["--train", "device=cuda:7"], "train.device"),
    ("train", "unknown_timm_arch", lambda t: ["--model", "timm/no_such_arch_xyz"], "no_such_arch_xyz"),
    ("train", "bad_regime", lambda t: ["--regime", "bogus"], "regime"),
    ("train", "negative_seed", lambda t: ["--seed", "-1"], "seed"),
    ("train", "model_opt_wrong_type", lambda t: ["--model-opt", "hidden=abc"], "hidden"),
    ("list", "plugin_missing", lambda t: ["--plugin", "no_such_plugin_mod"], "plugin 'no_such_plugin_mod'"),
    ("list", "plugin_syntax_error", lambda t: ["--plugin", _plugin(t, "bad_syntax_b", "x = = 1\n")],
     "SyntaxError"),
    ("list", "plugin_empty_name", lambda t: ["--plugin", ""], "--plugin"),
    ("list", "unknown_name", lambda t: ["methods", "mwm"], "did you mean 'mwn'?"),
    ("list", "unknown_kind", lambda t: ["colours"], "invalid choice"),
    ("report", "missing_dir", lambda t: [str(t / "nope")], "no plan.json"),
    ("report", "dir_is_a_file", lambda t: [str(_file(t, "f", ""))], "no plan.json"),
    ("report", "plan_object", lambda t: [_store(t, "{}")], "plan.json"),
    ("report", "plan_scalars", lambda t: [_store(t, '[1, 2, "x"]')], "plan.json"),
    ("report", "plan_entry_without_labels", lambda t: [_store(t, '[{"trial_id": "abc"}]')], "plan.json"),
    ("report", "plan_truncated", lambda t: [_store(t, '[{"trial_id": "abc", "lab')], "plan.json: unreadable"),
    ("report", "plan_is_a_directory", lambda t: [_store(t, plan=None)], "plan.json"),
    ("report", "sweep_yaml_unsafe", lambda t: [_store(t, sweep_yaml=UNSAFE_YAML)], "sweep.yaml"),
    ("report", "sweep_yaml_a_list", lambda t: [_store(t, sweep_yaml="[1, 2]\n")], "sweep.yaml"),
    ("report", "out_is_a_file", lambda t: [_store(t), "--out", str(_file(t, "f", ""))], "--out: "),
    ("report", "out_uncreatable", lambda t: [_store(t), "--out", NOWHERE], "--out: cannot create"),
    ("report", "bad_select_epoch", lambda t: [_store(t), "--select-epoch", "worst"], "invalid choice"),
    ("dashboard", "missing_dir", lambda t: [str(t / "nope")], "no plan.json"),
    ("dashboard", "plan_truncated", lambda t: [_store(t, '[{"trial_id"')], "plan.json"),
    ("dashboard", "plan_object", lambda t: [_store(t, '{"a": 1}')], "plan.json"),
    ("dashboard", "sweep_yaml_unsafe", lambda t: [_store(t, sweep_yaml=UNSAFE_YAML)], "sweep.yaml"),
    ("dashboard", "sweep_yaml_a_list", lambda t: [_store(t, sweep_yaml="[1, 2]\n")], "sweep.yaml"),
    ("dashboard", "no_runs", lambda t: [_store(t)], "no W&B runs"),
    ("perf", "unknown_setting", lambda t: ["--settings", "nope"], "invalid choice"),
    ("perf", "unknown_method", lambda t: ["--methods", "nope"], "--methods"),
    ("perf", "cuda_without_gpu", lambda t: ["--device", "cuda"], "no CUDA device"),
    ("perf", "json_uncreatable", lambda t: ["--settings", "mlp-digits", "--rounds", "1", "--epoch-repeats", "1",
                                            "--no-memory", "--json", NOWHERE + "/perf.json"], "--out: "),
    ("perf", "threads_zero", lambda t: ["--threads", "0"], "--threads"),
    ("perf", "batch_size_zero", lambda t: ["--batch-size", "0"], "--batch-size"),
    ("perf", "rounds_zero", lambda t: ["--rounds", "0"], "--rounds"),
    ("gpu_check", "cuda_without_gpu", lambda t: [], "no CUDA device"),
    ("gpu_check", "out_uncreatable", lambda t: ["--device", "cpu", "--tiny", "--out", NOWHERE], "--out: "),
    ("gpu_check", "unknown_device", lambda t: ["--device", "tpu"], "invalid choice"),
]
MODULES = {"run": "benchmarks.run", "train": "benchmarks.train", "list": "benchmarks.list",
           "report": "benchmarks.report", "dashboard": "benchmarks.dashboard", "perf": "benchmarks.perf",
           "gpu_check": "benchmarks.gpu_check"}


def verdict(code: int | None, err: str, expected: str | None) -> str:
    """'ok', or what is wrong with how a command ended."""
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if expected is None:
        return "ok" if code == 0 else f"exit {code}"
    lines = err.strip().splitlines()
    if code != 2:
        return f"exit {code}"
    if len(lines) != 1:
        return f"{len(lines)} lines"
    return "ok" if expected in lines[0] else "other message"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tests.hostile_cli", description=__doc__.splitlines()[0])
    p.add_argument("--verbose", action="store_true", help="print every case's stderr")
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    tally: dict[str, int] = {}
    for prog, case, make, expected in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            argv = make(t)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(t / "plug"), str(root)]), WANDB_MODE="disabled")
            try:
                r = subprocess.run([sys.executable, "-m", MODULES[prog], *argv], cwd=t, env=env, text=True,
                                   capture_output=True, timeout=a.timeout)
                code, err = r.returncode, r.stderr
            except subprocess.TimeoutExpired:
                code, err = None, "timed out"
            v = verdict(code, err, expected) if code is not None else "timed out"
            if (t / "pwned").exists():
                v = "CODE EXECUTED"
        kind = "not one line" if v.endswith(" lines") else v
        tally[kind] = tally.get(kind, 0) + 1
        print(f"{prog:10s} {case:28s} {v}", flush=True)
        if a.verbose or v != "ok":
            print("    " + "\n    ".join(err.strip().splitlines()[-3:]), flush=True)
    print(f"{len(CASES)} command lines: " + ", ".join(f"{n} {k}" for k, n in sorted(tally.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
