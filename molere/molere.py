"""MOLERE (Jain, Suggala & Shenoy, CVPR 2024): a learned splitter Θ picks the hardest δ-fraction
validation split of the pool S = train + official val, the LRW meta-network φ learns on it through the
look-ahead, and the classifier trains on the φ-weighted rest. After a warm-up of plain LRW on a random
split, S is re-split every epoch; every `meta_every` steps Θ steps on L_Θ (`molere.splitter`).

The paper's equations, each open choice and the reading chosen here, what each epoch logs (`split/*`,
scored by the classifier state that then trains on the split) and why the split freezes from epoch to
epoch (measured): docs/methods/molere.md.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from molere.config import ConfigError
from molere.data import Batch, ExampleSet
from molere.diagnostics import aligned
from molere.lrw_trainer import LRWHparams, LRWTrainer
from molere.margins import probabilistic_margin
from molere.reference import ReferenceNeeds
from molere.registry import register_method
from molere.splits import Draw
from molere.splitter import TRAIN, VALIDATION, Splitter, SplitterOptions, choose_validation, label_balance_kl, membership_weighted_loss, split_size_kl


class MOLEREHparams(LRWHparams, SplitterOptions):
    """LRW's options, the splitter's, and how the split is made."""
    renamed = {"warmup_epochs": "meta_warmup_epochs"}
    delta: float = Field(0.1, gt=0, lt=1, description="validation fraction δ of the pool (§1.3; mostly 0.1)")
    warmup_fraction: float = Field(0.25, ge=0, le=1, description="share of epochs on a random split (25/100, §2.4)")
    meta_warmup_epochs: int | None = Field(
        None, ge=0, description="warm-up epochs on a random split; None = warmup_fraction·epochs rounded half up "
                                "(not train.warmup_epochs, the learning-rate warm-up)")
    warmup_meta: bool = Field(True, description="φ trains during warm-up (§7.5 reading: warm-up is plain LRW)")
    fill: Literal["rank", "none"] = Field("rank", description="under δ|S| candidates: top up by P(val) rank (§7.3) or not")
    split_rule: Literal["threshold", "sample"] = Field(
        "threshold", description="candidates: P(val) > 0.5 (student's reading) or z ~ P_Θ (LS)")
    class_balanced: bool = Field(
        True, description="materialise the split within every observed class (each keeps its pool share of "
                          "the validation split, the balance L_Θ's KL aims at); False = one ranking over the pool")
    splitter_warmup: bool = Field(
        True, description="Θ trains during warm-up (correctness CE on pool batches + size/balance KLs: no split "
                          "needed) so the first split is informed; False = Θ untouched until then")
    resplit: Literal["pass", "epoch"] = Field(
        "pass", description="pool statistics for the next split: a fresh pass over the pool at epoch end, or "
                            "recorded on every training batch during the epoch (+ a pass over the val split)")


def class_tv(labels: torch.Tensor, val_mask: torch.Tensor, num_classes: int) -> float:
    """Total-variation distance between the class shares of the validation split and of the pool."""
    q_val = torch.bincount(labels[val_mask], minlength=num_classes).float() / max(int(val_mask.sum()), 1)
    q_all = torch.bincount(labels, minlength=num_classes).float() / len(labels)
    return 0.5 * (q_val - q_all).abs().sum().item()


OOF_FOLDS = 2   # folds of the ERM trial's stored out-of-fold margins (molere.reference_runs, the train-twice default)


def oof_stats(val_mask: torch.Tensor, oof: np.ndarray | None) -> dict[str, float]:
    """The split scored independently of MOLERE's classifier: share misclassified and mean margin under the ERM
    reference's out-of-fold margins (every pool example scored by an ERM that never trained on it)."""
    if oof is None:
        return {}
    m = torch.as_tensor(oof, dtype=torch.float32)
    out = {}
    for name, mask in (("val", val_mask), ("pool", torch.ones_like(val_mask))):
        out[f"split/{name}_erm_oof_misclassified"] = (m[mask] < 0).float().mean().item()
        out[f"split/{name}_erm_oof_margin"] = m[mask].mean().item()
    return out


def split_stats(pool: ExampleSet, val_mask: torch.Tensor, p_val: torch.Tensor, preds: torch.Tensor,
                margin: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Size, class balance, misclassification, margin, label noise and P(val) of val vs train and pool
    (the pool's value is what a random split of any size has in expectation)."""
    y = pool.labels
    wrong, noisy = preds != y, y != pool.true_labels
    n_val = int(val_mask.sum())
    out = {"split/val_size": float(n_val), "split/val_fraction": n_val / len(y),
           "split/val_class_tv": class_tv(y, val_mask, num_classes)}
    everything = torch.ones_like(val_mask)
    for name, m in (("val", val_mask), ("train", ~val_mask), ("pool", everything)):
        if m.any():
            out.update({f"split/{name}_misclassified": wrong[m].float().mean().item(),
                        f"split/{name}_margin": margin[m].mean().item(),
                        f"split/{name}_noisy": noisy[m].float().mean().item(),
                        f"split/{name}_p_val": p_val[m].mean().item()})
    return out


@register_method("molere")
class MOLERE(LRWTrainer):
    """MOLERE: a learned splitter picks the hardest δ-fraction validation split; LRW trains on the rest."""

    Hparams = MOLEREHparams
    trains_on_val = True   # the pool S is train + official val

    @classmethod
    def reference_needs(cls, hp: MOLEREHparams) -> ReferenceNeeds:
        """Its splits are also scored by the reference's out-of-fold margins (oof_stats): planned, only read."""
        return ReferenceNeeds(oof_folds=(OOF_FOLDS,))

    # ---- split ---------------------------------------------------------------------------------
    def split(self):
        hp, d = self.hp, self.data
        self.pool = d.pool()
        self.val_cap = int(round(hp.delta * len(self.pool)))
        if not 0 < self.val_cap < len(self.pool):
            raise ConfigError(f"method.hparams.delta: δ·|S| must round to 1..|S|-1 examples "
                              f"(got {hp.delta} of {len(self.pool)})")
        self.meta_warmup_epochs = (hp.meta_warmup_epochs if hp.meta_warmup_epochs is not None
                              else int(np.floor(hp.warmup_fraction * self.cfg.epochs + 0.5)))
        self._split_gen = torch.Generator().manual_seed(self.context.seed)
        self._cache: tuple[int, torch.Tensor] | None = None
        self.info.update(pool_size=len(self.pool), val_cap=self.val_cap, delta=hp.delta,
                         meta_warmup_epochs=self.meta_warmup_epochs, splitter_classes="0=validation,1=train",
                         split_history=[])
        random_val = Draw(self._split_gen, "torch").first(len(self.pool), self.val_cap)
        return self._assign(torch.as_tensor(random_val))

    def _assign(self, val_idx: torch.Tensor) -> tuple[ExampleSet, ExampleSet]:
        self.val_mask = torch.zeros(len(self.pool), dtype=torch.bool)
        self.val_mask[val_idx] = True
        self._train_pos = torch.nonzero(~self.val_mask).flatten()
        return (self.pool.subset(torch.nonzero(~self.val_mask).flatten()),
                self.pool.subset(torch.nonzero(self.val_mask).flatten()))

    def erm_oof_margins(self) -> np.ndarray | None:
        """The ERM reference's out-of-fold margins of the pool (pool order) when the store has them: the one
        place MOLERE reads the reference."""
        if not hasattr(self, "_oof"):
            got = self.reference.oof_margins(OOF_FOLDS, train=False)   # never trained for a diagnostic
            self._oof = None if got is None else aligned(self.pool.ids.numpy(), got.ids, got.margins)
        return self._oof

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.meta_warmup_epochs

    def setup(self) -> None:
        super().setup()
        if self.hp.val_term == "lookahead":
            self.lookahead = self.make_lookahead(keep_last=True)   # option B: ∂L_val/∂w of the φ step
        self.splitter = Splitter(self.hp, self.model, self.data.input_shape, self.data.num_classes)
        self.splitter_opt = self.splitter.make_optimizer()

    @torch.no_grad()
    def scores(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P(val), prediction and margin (observed label) of a batch under the frozen classifier, on the host."""
        f, logits = self.splitter.classify(x)
        p = F.softmax(self.splitter(x, y, f), 1)[:, VALIDATION]
        return p.float().cpu(), logits.argmax(1).cpu(), probabilistic_margin(logits, y).cpu()

    def pool_pass(self, examples: ExampleSet | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P(val), predictions and margins (eval mode) of every example of `examples` (the pool), in order."""
        batches = (b.to(self.device) for b in (examples or self.pool).batches(256, train=False, loading=self.loading))
        return tuple(torch.cat(c) for c in zip(*(self.scores(b.x, b.y) for b in batches)))

    def stream_demand(self) -> dict[str, float]:
        per_step = self.hp.meta_batch_size / self.hp.meta_every   # Θ's pool and validation batches
        return {**super().stream_demand(), "splitter_pool": per_step, "splitter_val": per_step}

    def resplits_after(self, epoch: int) -> bool:
        """Whether a re-split follows epoch `epoch` (0-based): only then is its end-of-epoch pool pass needed."""
        return self.meta_warmup_epochs <= epoch + 1 < self.cfg.epochs

    def on_epoch_start(self, epoch: int) -> None:
        first, resplit = epoch == 0 and not hasattr(self, "_split_stats"), epoch >= self.meta_warmup_epochs
        if first or resplit:   # one pass serves both the random split's statistics and the first re-split
            cached = self._cache is not None and self._cache[0] == self.global_step
            p_val, preds, margins = self._cache[1:] if cached else self.pool_pass()
        if first:   # the random warm-up split, with the initial classifier
            self._split_stats = split_stats(self.pool, self.val_mask, p_val, preds, margins, self.data.num_classes)
            self._split_stats.update(oof_stats(self.val_mask, self.erm_oof_margins()))
        if self.hp.resplit == "epoch":   # statistics of this epoch's training batches, by pool position
            n = len(self.pool)
            self._recorded = (torch.full((n,), float("nan")), torch.full((n,), -1), torch.full((n,), float("nan")))
        if not resplit:
            return
        labels = self.pool.labels if self.hp.class_balanced else None
        one_ranking = torch.Generator().set_state(self._split_gen.get_state())
        unbalanced = choose_validation(p_val, self.val_cap, self.hp.fill, self.hp.split_rule, one_ranking)
        idx = choose_validation(p_val, self.val_cap, self.hp.fill, self.hp.split_rule, self._split_gen, labels=labels)
        before = self.val_mask
        self.train_set, self.meta_set = self._assign(idx)
        # hardness of the new split under the classifier state that will now train on it
        stats = split_stats(self.pool, self.val_mask, p_val, preds, margins, self.data.num_classes)
        mask = torch.zeros_like(self.val_mask)
        mask[unbalanced] = True
        stats["split/val_class_tv_one_ranking"] = class_tv(self.pool.labels, mask, self.data.num_classes)
        stats["split/overlap_prev"] = (before & self.val_mask).sum().item() / max(int(self.val_mask.sum()), 1)
        stats.update(oof_stats(self.val_mask, self.erm_oof_margins()))
        self._split_stats = stats

    # ---- steps ---------------------------------------------------------------------------------
    def meta_step_due(self) -> bool:
        return super().meta_step_due() and (self.hp.warmup_meta or not self.in_warmup)

    def record(self, batch: Batch) -> None:
        """Keep the batch's pool statistics (for `resplit: epoch`), taken before this step's updates."""
        pos = self._train_pos[batch.idx.cpu()]
        for store, value in zip(self._recorded, self.scores(batch.x, batch.y)):
            store[pos] = value.to(store.dtype)

    def training_step(self, batch: Batch) -> torch.Tensor:
        if self.hp.resplit == "epoch":
            self.record(batch)
        splitter_due = (self.hp.splitter_warmup or not self.in_warmup) and self.global_step % self.hp.meta_every == 0
        self.lookahead.last = None            # option B only ever uses this step's look-ahead
        loss = super().training_step(batch)   # φ step (if due), then the φ-weighted loss of θ's step
        if splitter_due:
            self.splitter_step(batch)
        return loss

    def _next(self, name: str, attr: str) -> tuple[torch.Tensor, torch.Tensor]:
        b = next(self.stream(f"splitter_{name}", attr, self.hp.meta_batch_size)).to(self.device)
        return b.x, b.y

    def _scored(self, x: torch.Tensor, y: torch.Tensor):
        """Split logits (with graph to Θ), class logits and per-example losses (frozen classifier)."""
        f, logits = self.splitter.classify(x)
        return self.splitter(x, y, f), logits, F.cross_entropy(logits, y, reduction="none")

    def splitter_losses(self, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        """The terms of L_Θ on a pool batch and (when the split has one) a validation batch. In warm-up the
        split is random, so only the terms that need none apply: correctness CE on the pool batch and KLs."""
        hp, warm = self.hp, self.in_warmup
        xp, yp = self._next("pool", "pool")
        sp, zp, lp = self._scored(xp, yp)
        p_train = F.softmax(sp, 1)[:, TRAIN]
        terms = {"ratio": split_size_kl(p_train, 1 - hp.delta), "bal": label_balance_kl(p_train, yp)}
        on = {"pool": (sp, zp, lp, yp)}
        if len(self.meta_set) > 0 and not warm:
            xv, yv = self._next("val", "meta_set")
            sv, zv, lv = self._scored(xv, yv)
            on["val"] = (sv, zv, lv, yv)
        gap_on = "pool" if warm else hp.gap_on
        if gap_on in on:
            s, z, _, y = on[gap_on]
            terms["gap"] = F.cross_entropy(s, (z.argmax(1) == y).long())   # target 1 = correct = train
        if hp.val_term == "membership" and hp.val_term_on in on:
            s, _, losses, _ = on[hp.val_term_on]
            terms["val"] = membership_weighted_loss(F.softmax(s, 1)[:, VALIDATION], losses)
        hg = self.lookahead.last
        if hg is not None and batch is not None and not warm:
            # L_val depends on Θ through the training weights p_train·g_φ: ∂L_val/∂Θ = Σ dw_j g_j ∂p_j/∂Θ
            pt = F.softmax(self.splitter(batch.x, batch.y), 1)[:, TRAIN]
            terms["val"] = (hg.dw * hg.weights.detach() * pt).sum()
            self.lookahead.last = None
        return terms

    def splitter_step(self, batch: Batch | None = None) -> dict[str, float]:
        hp = self.hp
        terms = self.splitter_losses(batch)
        weights = {"gap": hp.w_gap, "val": -hp.lambda_val, "ratio": hp.w_ratio, "bal": hp.w_bal}
        loss = sum(weights[k] * v for k, v in terms.items())
        params = list(self.splitter.parameters())
        for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
            p.grad = torch.zeros_like(p) if g is None else g
        self.splitter_opt.step()
        self.splitter_opt.zero_grad(set_to_none=True)
        logged = {f"splitter_{k}": v.item() for k, v in terms.items()} | {"splitter_loss": loss.item()}
        self.log_step(**logged)
        return logged

    # ---- reporting and checkpoints -------------------------------------------------------------
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if self.hp.resplit == "epoch":
            p_val, preds, margins = self._recorded
            val_pos = torch.nonzero(self.val_mask).flatten()
            for store, value in zip(self._recorded, self.pool_pass(self.meta_set)):
                store[val_pos] = value.to(store.dtype)
            if torch.isnan(p_val).any():
                raise RuntimeError(f"resplit=epoch: {int(torch.isnan(p_val).sum())} pool examples were not seen")
            self._cache = (self.global_step, p_val, preds, margins)   # the next epoch's split uses this same state
        elif self.resplits_after(epoch):   # no pass after a warm-up epoch no split follows, nor after the last
            self._cache = (self.global_step, *self.pool_pass())
        stats = {**self._split_stats, "split/warmup": float(epoch < self.meta_warmup_epochs)}
        self.info["split_history"].append({"epoch": epoch + 1, **stats})
        return stats

    def extra_state(self) -> dict:
        return {**super().extra_state(), "splitter": self.splitter.state_dict(),
                "splitter_opt": self.splitter_opt.state_dict(), "val_mask": self.val_mask.clone(),
                "split_gen": self._split_gen.get_state(), "split_stats": getattr(self, "_split_stats", {}),
                "recorded": list(getattr(self, "_recorded", ())) if self.hp.resplit == "epoch" else None}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.splitter.load_state_dict(state["splitter"])
        self.splitter_opt.load_state_dict(state["splitter_opt"])
        self._split_gen.set_state(state["split_gen"])
        self._split_stats = state.get("split_stats", {})
        self.train_set, self.meta_set = self._assign(torch.nonzero(state["val_mask"]).flatten())
        if state.get("recorded"):
            self._recorded = tuple(state["recorded"])
