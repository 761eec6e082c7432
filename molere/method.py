"""MOLERE (Jain, Suggala & Shenoy, CVPR 2024): a learned splitter Θ picks the hardest δ-fraction
validation split of the pool S = train + official val, the LRW meta-network φ learns on it through the
look-ahead, and the classifier trains on the φ-weighted rest. After a warm-up of plain LRW on a random
split, S is re-split every epoch; every `meta_every` steps Θ steps on L_Θ (`molere.splitter`).

The paper's equations, each open choice and the reading chosen here: docs/methods/molere.md.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from .config import ConfigError
from .data import Batch, ExampleSet, forever
from .lrw import LRWHparams, LRWTrainer
from .margins import probabilistic_margin
from .registry import LRW_PANEL, MethodCard, register_method
from .splitter import (TRAIN, VALIDATION, Splitter, SplitterOptions, choose_validation, label_balance_kl,
                       membership_weighted_loss, split_size_kl)


class MOLEREHparams(LRWHparams, SplitterOptions):
    """LRW's options, the splitter's, and how the split is made."""
    delta: float = Field(0.1, gt=0, lt=1, description="validation fraction δ of the pool (§1.3; mostly 0.1)")
    warmup_fraction: float = Field(0.25, ge=0, le=1, description="share of epochs on a random split (25/100, §2.4)")
    warmup_epochs: int | None = Field(None, ge=0, description="warm-up epochs; None = warmup_fraction·epochs rounded half up")
    warmup_meta: bool = Field(True, description="φ trains during warm-up (§7.5 reading: warm-up is plain LRW)")
    fill: Literal["rank", "none"] = Field("rank", description="under δ|S| candidates: top up by P(val) rank (§7.3) or not")
    split_rule: Literal["threshold", "sample"] = Field(
        "threshold", description="candidates: P(val) > 0.5 (student's reading) or z ~ P_Θ (LS)")
    class_balanced: bool = Field(
        False, description="materialise the split within every observed class (each keeps its pool share of "
                           "the validation split); False = one ranking over the pool (paper)")


def split_stats(pool: ExampleSet, val_mask: torch.Tensor, p_val: torch.Tensor, logits: torch.Tensor,
                num_classes: int) -> dict[str, float]:
    """Size, class balance, misclassification, margin, label noise and P(val) of val vs train."""
    y = pool.labels
    wrong, margin, noisy = logits.argmax(1) != y, probabilistic_margin(logits, y), y != pool.true_labels
    n_val = int(val_mask.sum())
    q_val = torch.bincount(y[val_mask], minlength=num_classes).float() / max(n_val, 1)
    q_all = torch.bincount(y, minlength=num_classes).float() / len(y)
    out = {"split/val_size": float(n_val), "split/val_fraction": n_val / len(y),
           "split/val_class_tv": 0.5 * (q_val - q_all).abs().sum().item()}
    for name, m in (("val", val_mask), ("train", ~val_mask)):
        if m.any():
            out.update({f"split/{name}_misclassified": wrong[m].float().mean().item(),
                        f"split/{name}_margin": margin[m].mean().item(),
                        f"split/{name}_noisy": noisy[m].float().mean().item(),
                        f"split/{name}_p_val": p_val[m].mean().item()})
    return out


@register_method("molere")
class MOLERE(LRWTrainer):
    """MOLERE: a learned splitter picks the hardest δ-fraction validation split; LRW trains on the rest."""

    card = MethodCard(label="MOLERE", name="Meta-learning on hard samples", color="#d62728", ordering=3,
                      ordering_ties=True, panel=LRW_PANEL, margin_bins=True, rank=5)

    Hparams = MOLEREHparams
    trains_on_val = True   # the pool S is train + official val

    # ---- split ---------------------------------------------------------------------------------
    def split(self):
        hp, d = self.hp, self.data
        self.pool = d.pool()
        self.val_cap = int(round(hp.delta * len(self.pool)))
        if not 0 < self.val_cap < len(self.pool):
            raise ConfigError(f"method.hparams.delta: δ·|S| must round to 1..|S|-1 examples "
                              f"(got {hp.delta} of {len(self.pool)})")
        self.warmup_epochs = (hp.warmup_epochs if hp.warmup_epochs is not None
                              else int(np.floor(hp.warmup_fraction * self.cfg.epochs + 0.5)))
        self._split_gen = torch.Generator().manual_seed(self.context.seed)
        self._streams: dict[str, tuple] = {}
        self._cache: tuple[int, torch.Tensor] | None = None
        self.info.update(pool_size=len(self.pool), val_cap=self.val_cap, delta=hp.delta,
                         warmup_epochs=self.warmup_epochs, splitter_classes="0=validation,1=train",
                         split_history=[])
        random_val = torch.randperm(len(self.pool), generator=self._split_gen)[:self.val_cap]
        return self._assign(random_val)

    def _assign(self, val_idx: torch.Tensor) -> tuple[ExampleSet, ExampleSet]:
        self.val_mask = torch.zeros(len(self.pool), dtype=torch.bool)
        self.val_mask[val_idx] = True
        return (self.pool.subset(torch.nonzero(~self.val_mask).flatten()),
                self.pool.subset(torch.nonzero(self.val_mask).flatten()))

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.warmup_epochs

    def setup(self) -> None:
        super().setup()
        if self.hp.val_term == "lookahead":
            self.lookahead = self.make_lookahead(keep_last=True)   # option B: ∂L_val/∂w of the φ step
        self.splitter = Splitter(self.hp, self.model, self.data.input_shape, self.data.num_classes)
        self.splitter_opt = self.splitter.make_optimizer()

    @torch.no_grad()
    def pool_pass(self) -> tuple[torch.Tensor, torch.Tensor]:
        """P(val) and classifier logits (eval mode) for every pool example, in order."""
        p, z = [], []
        for b in self.pool.batches(256, train=False, num_workers=self.cfg.num_workers):
            x, y = b.x.to(self.device), b.y.to(self.device)
            f, logits = self.splitter.classify(x)
            p.append(F.softmax(self.splitter(x, y, f), 1)[:, VALIDATION].float().cpu())
            z.append(logits.float().cpu())
        return torch.cat(p), torch.cat(z)

    def on_epoch_start(self, epoch: int) -> None:
        if epoch < self.warmup_epochs:
            return
        cached = self._cache is not None and self._cache[0] == self.global_step
        p_val = self._cache[1] if cached else self.pool_pass()[0]
        idx = choose_validation(p_val, self.val_cap, self.hp.fill, self.hp.split_rule, self._split_gen,
                                labels=self.pool.labels if self.hp.class_balanced else None)
        self.train_set, self.meta_set = self._assign(idx)

    # ---- steps ---------------------------------------------------------------------------------
    def meta_step_due(self) -> bool:
        return super().meta_step_due() and (self.hp.warmup_meta or not self.in_warmup)

    def training_step(self, batch: Batch) -> torch.Tensor:
        splitter_due = not self.in_warmup and self.global_step % self.hp.meta_every == 0
        self.lookahead.last = None            # option B only ever uses this step's look-ahead
        loss = super().training_step(batch)   # φ step (if due), then the φ-weighted loss of θ's step
        if splitter_due:
            self.splitter_step(batch)
        return loss

    def _next(self, name: str, examples: ExampleSet) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self._streams or self._streams[name][0] is not examples:
            self._streams[name] = (examples, forever(examples, self.hp.meta_batch_size, self.generator, train=True))
        b = next(self._streams[name][1]).to(self.device)
        return b.x, b.y

    def _scored(self, x: torch.Tensor, y: torch.Tensor):
        """Split logits (with graph to Θ), class logits and per-example losses (frozen classifier)."""
        f, logits = self.splitter.classify(x)
        return self.splitter(x, y, f), logits, F.cross_entropy(logits, y, reduction="none")

    def splitter_losses(self, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        """The terms of L_Θ on a pool batch and (when the split has one) a validation batch."""
        hp = self.hp
        xp, yp = self._next("pool", self.pool)
        sp, zp, lp = self._scored(xp, yp)
        p_train = F.softmax(sp, 1)[:, TRAIN]
        terms = {"ratio": split_size_kl(p_train, 1 - hp.delta), "bal": label_balance_kl(p_train, yp)}
        on = {"pool": (sp, zp, lp, yp)}
        if len(self.meta_set) > 0:
            xv, yv = self._next("val", self.meta_set)
            sv, zv, lv = self._scored(xv, yv)
            on["val"] = (sv, zv, lv, yv)
        if hp.gap_on in on:
            s, z, _, y = on[hp.gap_on]
            terms["gap"] = F.cross_entropy(s, (z.argmax(1) == y).long())   # target 1 = correct = train
        if hp.val_term == "membership" and hp.val_term_on in on:
            s, _, losses, _ = on[hp.val_term_on]
            terms["val"] = membership_weighted_loss(F.softmax(s, 1)[:, VALIDATION], losses)
        hg = self.lookahead.last
        if hg is not None and batch is not None:
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
        p_val, logits = self.pool_pass()
        self._cache = (self.global_step, p_val)   # the next epoch's split uses this same state
        stats = split_stats(self.pool, self.val_mask, p_val, logits, self.data.num_classes)
        stats["split/warmup"] = float(epoch < self.warmup_epochs)
        self.info["split_history"].append({"epoch": epoch + 1, **stats})
        return stats

    def extra_state(self) -> dict:
        return {**super().extra_state(), "splitter": self.splitter.state_dict(),
                "splitter_opt": self.splitter_opt.state_dict(), "val_mask": self.val_mask.clone(),
                "split_gen": self._split_gen.get_state()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.splitter.load_state_dict(state["splitter"])
        self.splitter_opt.load_state_dict(state["splitter_opt"])
        self._split_gen.set_state(state["split_gen"])
        self.train_set, self.meta_set = self._assign(torch.nonzero(state["val_mask"]).flatten())
