"""JTT: Just Train Twice (Liu et al., ICML 2021): an ERM model of the key identifies the error set (the
training examples it misclassifies, observed labels); a model trained from scratch sees every error-set
example λ_up times per epoch and every other example once.

The ERM pass is the stored ERM trial of the key when `identify_epochs` is its full length (as the
train-twice variants reuse it), else trained here for `identify_epochs` epochs of the same schedule.
Paper / official-code facts and our readings: docs/methods/jtt.md.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from molere.config import ConfigError, Strict
from molere.data import ExampleSet
from molere.reference import ReferenceNeeds
from molere.registry import METHODS, register_method
from molere.trainer import RunContext, Trainer

from .recorded import RecordedWeights
from .train_twice import align


def upsample(examples: ExampleSet, errors: np.ndarray, up_weight: int) -> ExampleSet:
    """`examples` with every position in `errors` present `up_weight` times in all (the others once)."""
    extra = np.repeat(np.asarray(errors, dtype=np.int64), up_weight - 1)
    return examples.subset(np.concatenate([np.arange(len(examples)), extra]))


@register_method("jtt")
class JTT(RecordedWeights, Trainer):
    """Just Train Twice: ERM's misclassified training examples up-sampled λ_up times, trained from scratch."""

    weights_recorded = "each training example's multiplicity in the up-sampled training set (1 or λ_up)"

    class Hparams(Strict):
        up_weight: int = Field(6, ge=1, description="λ_up: times every error-set example is seen per epoch "
                                                    "(paper: 6 MultiNLI / CivilComments, 50 CelebA, 100 Waterbirds)")
        identify_epochs: int | None = Field(None, gt=0, description="T: epochs of the identifying ERM; None = "
                                                                    "its full run (the stored ERM trial, reused)")

    @classmethod
    def reference_needs(cls, hp) -> ReferenceNeeds:
        """The reference's pool margins when the identifying ERM is the full run (planned first, reused)."""
        return ReferenceNeeds(pool_margins=hp.identify_epochs is None)

    def split(self):
        train = self.data.train
        margins = self.identification_margins(train)
        errors = np.flatnonzero(margins < 0)   # misclassified: another class has a higher probability
        self.error_positions = errors
        upsampled = upsample(train, errors, self.hp.up_weight)
        noisy = (train.labels != train.true_labels).numpy()
        self.info.update(train_size=len(upsampled), distinct_train_size=len(train), meta_size=0,
                         error_set_size=len(errors), up_weight=self.hp.up_weight,
                         identify_epochs=self.hp.identify_epochs or self.cfg.epochs,
                         error_set_noise_fraction=float(noisy[errors].mean()) if len(errors) else float("nan"),
                         train_noise_fraction=float(noisy.mean()))
        return upsampled, None

    # ---- the one contact with the ERM reference ------------------------------------------------
    def identification_margins(self, train: ExampleSet) -> np.ndarray:
        """Margins (observed labels) of the identifying ERM model on `train`, in train order."""
        if self.hp.identify_epochs is None:   # the full ERM run: stored, else trained in-process once
            got = self.reference.pool_margins()
            self.info["erm_pass"] = got.source
            return align(train.ids.numpy(), got.ids, got.margins)
        stored = self.reference.pool_margins(train=False) if self.hp.identify_epochs == self.cfg.epochs else None
        if stored is not None:
            self.info["erm_pass"] = "reused"
            return align(train.ids.numpy(), stored.ids, stored.margins)
        self.info["erm_pass"] = "in_process"
        return self._train_identifier(train)

    def _train_identifier(self, train: ExampleSet) -> np.ndarray:
        ctx: RunContext = self.context
        if ctx.model_factory is None:
            raise ConfigError("method 'jtt': no stored ERM margins and no model factory to train ERM with")
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(ctx.seed)
            erm = METHODS.get(METHODS.reference())(ctx.model_factory(), self.data, self.cfg, None, RunContext(
                seed=ctx.seed, device=ctx.device, model_factory=ctx.model_factory, run_config=ctx.run_config))
            for _ in range(self.hp.identify_epochs or self.cfg.epochs):   # epoch T of the full schedule
                erm.train_epoch()
            return erm.outputs(train, true_labels=False).margins

    # ---- diagnostics: the weight of an example is its multiplicity -----------------------------
    def recorded_weights(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.data.train)
        w = np.ones(n)
        w[self.error_positions] = self.hp.up_weight
        return np.arange(n), w   # positions 0..n-1 of the up-sampled set are the distinct examples, in order
