"""Self-paced learning (Kumar et al., NeurIPS 2010) as a plugin method: a plain `Trainer`."""
import torch.nn.functional as F
from pydantic import Field

from molere.config import Strict
from molere.registry import MethodCard, register_method
from molere.trainer import Trainer


@register_method("spl")
class SelfPaced(Trainer):
    """Self-paced learning: only examples whose loss is below λ count; λ grows every epoch."""

    card = MethodCard(label="SPL", name="Self-paced learning", color="#bcbd22")

    class Hparams(Strict):
        threshold: float = Field(1.0, gt=0, description="loss threshold λ of the first epoch")
        growth: float = Field(1.3, ge=1, description="λ is multiplied by this after every epoch")

    def training_step(self, batch):
        losses = F.cross_entropy(self.model(batch.x), batch.y, reduction="none")
        easy = (losses.detach() < self.hp.threshold * self.hp.growth ** self.epoch).float()
        self.log_step(selected=easy.mean().item())
        return (easy * losses).sum() / easy.sum().clamp_min(1)
