"""What a sweep runs for the ERM references of its trials, and in which order.

Every planned trial carries what its method declares it needs from the reference of its key
(`PlannedTrial.needs`): the reference trial (pool margins, test outputs; added to the plan by
`plan.with_references`) and out-of-fold models (`fold_jobs`: exactly K per key and fold count K, none
when no planned method asks). Those run first; a trial waits for the ones of its key that run now.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.sweep.plan import PlannedTrial
from benchmarks.sweep.worker import trial_spec
from benchmarks.trial.config import TrialConfig, erm_reference_config
from benchmarks.trial.reference import FOLD_JOB, fold_job_id, oof_dir
from benchmarks.trial.store import RunDir


@dataclass(frozen=True)
class FoldJob:
    """Out-of-fold model `fold` of `folds` of the reference of key `erm_id` (a run directory inside the
    reference trial's)."""
    erm_id: str
    folds: int
    fold: int
    config: TrialConfig     # the reference trial's configuration
    labels: dict

    @property
    def trial_id(self) -> str:
        return fold_job_id(self.erm_id, self.folds, self.fold)

    def out_dir(self, directory: Path) -> Path:
        return oof_dir(Path(directory) / "trials" / self.erm_id, self.folds, self.fold)

    def spec(self, sweep) -> dict:
        """The worker spec of this job (no W&B run of its own)."""
        return {**trial_spec(self, sweep, None), "job": FOLD_JOB, "folds": self.folds, "fold": self.fold,
                "out_dir": str(self.out_dir(sweep.directory).resolve())}


def fold_jobs(trials: list[PlannedTrial]) -> list[FoldJob]:
    """The out-of-fold models the trials' methods declare, each once (K per key and fold count K)."""
    jobs: dict[str, FoldJob] = {}
    for t in trials:
        for folds in t.needs.oof_folds:
            for k in range(folds):
                labels = {**t.labels, "method": f"{t.labels['method']}: reference fold {k + 1}/{folds}"}
                job = FoldJob(t.erm_id, folds, k, erm_reference_config(t.config), labels)
                jobs.setdefault(job.trial_id, job)
    return list(jobs.values())


def depends_on(t: PlannedTrial) -> list[str]:
    """Ids of the reference trial and out-of-fold jobs `t` needs done before it runs."""
    deps = [t.erm_id] if t.needs_reference else []
    return deps + [fold_job_id(t.erm_id, folds, k) for folds in t.needs.oof_folds for k in range(folds)]


def pending_jobs(trials: list[PlannedTrial], directory: Path) -> list[FoldJob]:
    """The out-of-fold jobs of `trials` whose run directory is not done."""
    return [j for j in fold_jobs(trials) if RunDir(j.out_dir(directory)).status != "done"]


def done_but_rerun_reference(trials: list[PlannedTrial], status: dict[str, str], todo: list[PlannedTrial],
                             jobs: list[FoldJob]) -> list[PlannedTrial]:
    """The done trials of which something they depend on runs again now (`todo`, `jobs`)."""
    rerun = {t.trial_id for t in todo} | {j.trial_id for j in jobs}
    return [t for t in trials if status[t.trial_id] == "done" and set(depends_on(t)) & rerun]


def order(trials: list[PlannedTrial], jobs: list[FoldJob]) -> tuple[list, dict[str, list[str]]]:
    """(reference trials, out-of-fold jobs, then the other trials; {id: ids it waits for among those run now})."""
    running = {t.trial_id for t in trials} | {j.trial_id for j in jobs}
    first = [t for t in trials if t.erm_id == t.trial_id]
    ordered = first + list(jobs) + [t for t in trials if t.erm_id != t.trial_id]
    waits = {t.trial_id: [d for d in depends_on(t) if d in running] for t in trials}
    return ordered, waits


def specs(ordered: list, sweep, wandb_settings: dict | None) -> list[dict]:
    return [x.spec(sweep) if isinstance(x, FoldJob) else trial_spec(x, sweep, wandb_settings) for x in ordered]


def dry_run_note(trials: list[PlannedTrial], directory: Path) -> str:
    """' and N of M out-of-fold ERM models' for the dry run's last line ('' when none is planned)."""
    jobs = fold_jobs(trials)
    return f" and {len(pending_jobs(trials, directory))} of {len(jobs)} out-of-fold ERM models" if jobs else ""


def running_note(jobs: list[FoldJob]) -> str:
    """' and N out-of-fold ERM models' for the line that starts a run ('' when none runs)."""
    return f" and {len(jobs)} out-of-fold ERM models" if jobs else ""


def run_dir(run_id: str, jobs: list[FoldJob], directory: Path) -> RunDir:
    """The run directory of a trial or out-of-fold job of this run, by its id."""
    found = [j.out_dir(directory) for j in jobs if j.trial_id == run_id]
    return RunDir(found[0] if found else Path(directory) / "trials" / run_id)


def report_unfinished(jobs: list[FoldJob], directory: Path) -> None:
    """Name every out-of-fold job of this run that did not finish (its dependants trained it in-process)."""
    for j in jobs:
        if RunDir(j.out_dir(directory)).status != "done":
            print(f"  reference model {j.trial_id} did not finish; the trials needing it trained it in-process")
