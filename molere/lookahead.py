"""The one look-ahead engine of every meta method: a differentiable virtual SGD step θ̂(w) and the exact
(or finite-difference) meta-gradient ∂L_val/∂w of its validation loss, without mutating the real model.
Modes, loss hooks, BatchNorm handling, precision and measured errors: docs/design/lookahead.md.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from .forward import BatchOutputs, head_inputs
from .precision import autocast_dtype, double_differentiable, full, ieee_fp32, no_autocast, reduced

Scope = Literal["all", "head"]


def _mean_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default outer loss: mean cross-entropy."""
    return F.cross_entropy(logits, y)


class _Features(nn.Module):
    """A model's pre-logit features (the classifier head's input) as a module, so `functional_call` can
    feed it cloned buffers: `forward_head(forward_features(x), pre_logits=True)`, timm's protocol (pooling,
    norms and dropout of the head included; for timm models `forward_features` alone is unpooled)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m.forward_head(self.m.forward_features(x), pre_logits=True)


def cloned_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the model's buffers: forwards on them leave its BatchNorm statistics untouched."""
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def features_on(model: nn.Module, buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Pre-logit features of x (`get_classifier()` maps them to the logits), with `buffers` standing in
    for the model's own buffers."""
    return functional_call(_Features(model), {f"m.{n}": b for n, b in buffers.items()}, (x,))


def rng_state(device: torch.device) -> tuple:
    """The random state a forward starts from (CPU, and the device's on CUDA)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextmanager
def replaying(state: tuple, device: torch.device):
    """Run the block from `state` — the same dropout masks as the forward that started there — and leave
    the global random state as it was."""
    cpu, cuda = state
    index = device.index if device.index is not None or cuda is None else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[index] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names (in `model.named_parameters()`) of the classifier head's parameters."""
    names = getattr(model, "head_param_names", None)
    if names:
        return list(names)
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    return [n for n, p in model.named_parameters() if id(p) in head_ids]


class DetachedWeightsError(RuntimeError):
    """The look-ahead's weights have no graph to the parameters asked for (detached, or built without them)."""


@dataclass
class Hypergradient:
    """Result of one look-ahead: per-example meta-gradients and the reusable training forward."""
    dw: torch.Tensor            # ∂L_val/∂w, detached, the shape of the weights (B,) or (B, ...)
    weights: torch.Tensor | None  # the weights used in the look-ahead (graph to the weighting function)
    val_loss: torch.Tensor      # L_val at θ̂, detached scalar
    outputs: BatchOutputs       # the training forward: logits and ℓ_i(θ) with graph to θ (for the real step)
    _model: nn.Module
    _buffers: dict[str, torch.Tensor]

    @property
    def train_losses(self) -> torch.Tensor:
        """ℓ_i(θ) with graph to the real parameters (for the real step)."""
        return self.outputs.losses

    def backward_to(self, params) -> list[torch.Tensor]:
        """∂L_val/∂φ for the look-ahead's weights w = g_φ(·) (chain rule through g_φ only); raises
        `DetachedWeightsError` when the weights carry no graph to any of `params`."""
        params = list(params)
        if self.weights is None or not self.weights.requires_grad:
            raise DetachedWeightsError("the weights carry no graph (detached, or computed under no_grad)")
        grads = torch.autograd.grad(self.weights, params, grad_outputs=self.dw.to(self.weights.dtype),
                                    allow_unused=True)
        if params and all(g is None for g in grads):
            raise DetachedWeightsError("the weights do not depend on the meta parameters")
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def commit_buffers(self) -> None:
        """Copy the training forward's BatchNorm statistics into the real model (as an ERM step would)."""
        with torch.no_grad():
            for name, buf in self._model.named_buffers():
                if name in self._buffers:
                    buf.copy_(self._buffers[name])


class LookAhead:
    """Meta-gradients of a validation loss w.r.t. per-example training weights, via a virtual step."""

    def __init__(self, model: nn.Module, scope: Scope = "all", val_bn: Literal["batch", "running"] = "batch",
                 reduction: Literal["mean", "sum"] = "mean",
                 mode: Literal["reverse", "forward", "finite_diff"] = "reverse", fd_eps: float = 0.01,
                 fd_scheme: Literal["central", "one_sided"] = "central", label_smoothing: float = 0.0,
                 keep_last: bool = False):
        if scope not in ("all", "head"):
            raise ValueError(f"lookahead scope must be 'all' or 'head' (got {scope!r})")
        if mode not in ("reverse", "forward", "finite_diff"):
            raise ValueError(f"hypergradient mode must be 'reverse', 'forward' or 'finite_diff' (got {mode!r})")
        self.model, self.scope, self.val_bn, self.reduction, self.mode = model, scope, val_bn, reduction, mode
        if fd_scheme not in ("central", "one_sided"):
            raise ValueError(f"finite-difference scheme must be 'central' or 'one_sided' (got {fd_scheme!r})")
        self.fd_eps, self.fd_scheme = fd_eps, fd_scheme
        self.label_smoothing = label_smoothing   # of the training losses ℓ_i (the validation loss is plain CE)
        self.keep_last, self.calls = keep_last, 0   # calls: look-aheads run so far (a meta step happened)
        self.last: Hypergradient | None = None   # the latest result, kept (with its graph) only if keep_last
        all_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.names = head_parameter_names(model) if scope == "head" else all_names
        if not self.names:
            raise ValueError("look-ahead scope selects no trainable parameters")
        head = model.get_classifier() if scope == "head" else None
        if head is not None:   # model-level name -> name inside the head module
            by_id = {id(p): n for n, p in head.named_parameters()}
            params = dict(model.named_parameters())
            self._head_names = {n: by_id[id(params[n])] for n in self.names}

    def _in_mode(self, training: bool, fn, *args):
        """fn(*args) with the model temporarily in train (batch statistics) or eval mode."""
        was = self.model.training
        self.model.train(training)
        try:
            return fn(*args)
        finally:
            self.model.train(was)

    def _val_loss(self, fast: dict, x_val: torch.Tensor, y_val: torch.Tensor, val_fn=None) -> torch.Tensor:
        """The outer loss (`val_fn`, default mean CE) of the validation batch at the look-ahead parameters
        (cloned BN buffers)."""
        model, training = self.model, self.val_bn == "batch"
        val_fn = val_fn or _mean_ce
        if self.scope == "head":
            with torch.no_grad():
                hv = self._in_mode(training, features_on, model, cloned_buffers(model), x_val)
            return self._head_losses(fast, hv, y_val, val_fn)
        tensors = {**dict(model.named_parameters()), **fast, **cloned_buffers(model)}
        return val_fn(full(self._in_mode(training, functional_call, model, tensors, (x_val,))), y_val)

    def _head_forward(self, head_params: dict, h: torch.Tensor, y: torch.Tensor, fn) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and fn(logits, y) of the head at `head_params` (model-level names) on features h, in IEEE float32."""
        head = {self._head_names[n]: t for n, t in head_params.items()}
        with ieee_fp32(h.device.type):
            logits = functional_call(self.model.get_classifier(), head, (full(h),))
            return logits, fn(logits, y)

    def _head_losses(self, head_params: dict, h: torch.Tensor, y: torch.Tensor, fn) -> torch.Tensor:
        return self._head_forward(head_params, h, y, fn)[1]

    def _train_fn(self, losses_fn):
        """The per-example training losses: `losses_fn`, or CE with the configured label smoothing."""
        if losses_fn is not None:
            return losses_fn
        return lambda z, t: F.cross_entropy(full(z), t, reduction="none", label_smoothing=self.label_smoothing)

    def hypergradient(self, x: torch.Tensor, y: torch.Tensor, *, val_x: torch.Tensor, val_y: torch.Tensor,
                      lr: float, weight_fn: Callable[[BatchOutputs], torch.Tensor] | None = None,
                      losses_fn: Callable | None = None, val_loss_fn: Callable | None = None) -> Hypergradient:
        """Look ahead on the training batch (x, y) with step size `lr` and weights `weight_fn(the training
        forward's outputs, detached)`, then differentiate the loss on (val_x, val_y) w.r.t. those weights.

        Without `weight_fn` the look-ahead is at all-zero weights (L2RW's ε = 0, so θ̂ = θ).
        `losses_fn` / `val_loss_fn`: the training losses and the outer loss (module docstring)."""
        if autocast_dtype(x.device.type) == torch.float16:   # no loss scaling in here: run without autocast
            with no_autocast(x.device.type):
                return self.hypergradient(x, y, val_x=val_x, val_y=val_y, lr=lr, weight_fn=weight_fn,
                                          losses_fn=losses_fn, val_loss_fn=val_loss_fn)
        train_fn = self._train_fn(losses_fn)
        x_val, y_val = val_x, val_y
        self.calls += 1
        model = self.model
        params = dict(model.named_parameters())
        scoped = {n: params[n] for n in self.names}
        train_bufs = cloned_buffers(model)   # the real step's forward: its statistics are committed later
        # first-order modes re-run this forward later, with the same dropout masks
        start = None if self.mode == "reverse" else rng_state(x.device)
        if self.scope == "head":
            feats = features_on(model, train_bufs, x)
            logits, losses = self._head_forward({n: params[n] for n in self.names}, feats, y, train_fn)
            out = BatchOutputs(logits, losses, feats.detach())
        else:
            with double_differentiable() if self.mode != "finite_diff" else nullcontext(), head_inputs(model) as f:
                logits = full(functional_call(model, {**params, **train_bufs}, (x,)))
            losses = train_fn(logits, y)
            out = BatchOutputs(logits, losses, f[0] if f else None)
        scale = 1.0 / len(y) if self.reduction == "mean" else 1.0
        weights = None if weight_fn is None else weight_fn(out.detached())
        w = torch.zeros_like(losses) if weights is None else full(weights.detach())
        fns = (train_fn, val_loss_fn)
        if self.mode == "reverse":
            dw, val_loss = self._reverse(losses, w, scoped, scale, lr, x_val, y_val, val_loss_fn)
        else:
            dw, val_loss = self._first_order(losses, feats.detach() if self.scope == "head" else None, x, y, w,
                                             scoped, scale, lr, x_val, y_val, start, fns)
        hg = Hypergradient(dw=dw, weights=weights, val_loss=val_loss.detach(), outputs=out,
                           _model=model, _buffers=train_bufs)
        if self.keep_last:
            self.last = hg
        return hg

    def _reverse(self, losses, w, scoped, scale, lr, x_val, y_val, val_fn):
        """Second-order reverse mode: differentiate L_val(θ − α ∇θ Σ w ℓ) w.r.t. a leaf w."""
        w = w.clone().requires_grad_()
        g = torch.autograd.grad((w * losses).sum() * scale, list(scoped.values()), create_graph=True)
        fast = {n: p - lr * gi for (n, p), gi in zip(scoped.items(), g)}
        val_loss = self._val_loss(fast, x_val, y_val, val_fn)
        (dw,) = torch.autograd.grad(val_loss, w, retain_graph=True)   # keep the forward for the real step
        return dw.detach(), val_loss

    def _first_order(self, losses, h, x, y, w, scoped, scale, lr, x_val, y_val, start, fns):
        """First-order graphs only: θ̂ by one backward, v = ∇L_val(θ̂), then −α⟨v, ∇ℓ_i⟩ by a `jvp`
        ("forward") or by a central difference of ℓ_i along v ("finite_diff")."""
        model, (train_fn, val_fn) = self.model, fns
        if w.abs().sum() == 0:
            fast = {n: p.detach() for n, p in scoped.items()}
        else:
            g = torch.autograd.grad((w * losses).sum() * scale, list(scoped.values()), retain_graph=True)
            fast = {n: (p - lr * gi).detach() for (n, p), gi in zip(scoped.items(), g)}
        fast = {n: p.requires_grad_() for n, p in fast.items()}
        val_loss = self._val_loss(fast, x_val, y_val, val_fn)
        v = torch.autograd.grad(val_loss, list(fast.values()))
        params = dict(model.named_parameters())

        def per_example(p):   # ℓ_i as a function of the scoped parameters: the training forward, replayed
            if self.scope == "head":
                return self._head_losses(p, h, y, train_fn)
            with replaying(start, x.device):
                tensors = {**params, **p, **cloned_buffers(model)}
                return train_fn(full(functional_call(model, tensors, (x,))), y)

        primals = {n: p.detach() for n, p in scoped.items()}
        if self.mode == "forward":
            # math attention for forward-mode AD; no autocast: jvp does not compose with it (torch 2.14:
            # conv input/weight dtype mismatch inside the transform), so this one pass runs in float32
            with double_differentiable(), no_autocast(x.device.type):
                _, directional = jvp(per_example, (primals,), (dict(zip(fast, v)),))
            return (-lr * scale) * directional.detach(), val_loss
        v = [full(t) for t in v]
        norm = torch.sqrt(sum(t.pow(2).sum() for t in v))
        if norm == 0:
            return torch.zeros_like(losses.detach()), val_loss
        eps = self.fd_eps / norm
        # ℓ_i(θ) is the training forward's, unless that ran below IEEE float32 (then it is recomputed)
        recompute = self.scope == "all" and reduced(x.device.type)
        with torch.no_grad(), ieee_fp32(x.device.type):   # a difference of nearby losses needs every bit
            plus = per_example({n: p + eps * t for (n, p), t in zip(primals.items(), v)})
            if self.fd_scheme == "one_sided":
                base = per_example(primals) if recompute else losses.detach()
                return (-lr * scale) * (plus - base) / eps, val_loss
            minus = per_example({n: p - eps * t for (n, p), t in zip(primals.items(), v)})
        return (-lr * scale) * (plus - minus) / (2 * eps), val_loss
