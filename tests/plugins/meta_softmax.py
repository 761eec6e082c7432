"""A plugin method calling the look-ahead directly: softmax weights from the meta-gradient at ε = 0."""
import torch
import torch.nn.functional as F
from pydantic import Field

from molere.registry import register_method
from molere.reweighting import MetaTrainer, ReweightingHparams


@register_method("meta_softmax")
class MetaSoftmax(MetaTrainer):
    """Meta-softmax: batch weights B·softmax(−τ·g / max|g|), g = ∂L_meta/∂ε of a look-ahead at ε = 0."""

    class Hparams(ReweightingHparams):
        temperature: float = Field(3.0, gt=0, description="sharpness τ of the softmax over the batch")

    def training_step(self, batch):
        if not self.meta_step_due():
            return F.cross_entropy(self.model(batch.x), batch.y)
        xv, yv = self.next_meta_batch()
        hg = self.lookahead.hypergradient(batch.x, batch.y, val_x=xv, val_y=yv, lr=self.lookahead_lr())
        hg.commit_buffers()   # the real step reuses the look-ahead's training forward
        scale = hg.dw.abs().max().clamp_min(1e-12)
        w = len(hg.dw) * torch.softmax(-self.hp.temperature * hg.dw / scale, 0)
        self.log_step(meta_val_loss=hg.val_loss.item())
        return (w * hg.train_losses).mean()
