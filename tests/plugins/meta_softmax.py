"""A plugin method calling the look-ahead directly: softmax weights from the meta-gradient at ε = 0."""
import torch
from pydantic import Field

from molere.registry import register_method
from molere.reweighting import MetaTrainer, MetaTrainerHparams


@register_method("meta_softmax")
class MetaSoftmax(MetaTrainer):
    """Meta-softmax: batch weights B·softmax(−τ·g / max|g|), g = ∂L_meta/∂ε of a look-ahead at ε = 0."""

    class Hparams(MetaTrainerHparams):
        temperature: float = Field(3.0, gt=0, description="sharpness τ of the softmax over the batch")

    def training_step(self, batch):
        if not self.meta_step_due():
            return self.train_loss(self.model(batch.x), batch.y)
        hg = self.meta_lookahead(batch)   # ε = 0; its training forward is the real step's
        g = hg.dw / hg.dw.abs().max().clamp_min(1e-12)
        w = len(g) * torch.softmax(-self.hp.temperature * g, 0)
        return (w * hg.train_losses).mean()
