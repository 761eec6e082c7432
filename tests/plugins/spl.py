"""Self-paced learning (Kumar et al., NeurIPS 2010) as a plugin method: a plain `Trainer`."""
from pydantic import Field

from molere.config import Strict
from molere.registry import register_method
from molere.trainer import Trainer


@register_method("spl")
class SelfPaced(Trainer):
    """Self-paced learning: each step trains on the batch's easiest (lowest-loss) examples, a growing share."""

    display = {"label": "SPL", "name": "Self-paced learning", "color": "#bcbd22"}   # optional report hints

    class Hparams(Strict):
        start: float = Field(0.5, gt=0, le=1, description="share of each batch trained on in the first epoch")
        step: float = Field(0.1, ge=0, description="share added after every epoch (up to 1)")

    def training_step(self, batch):
        losses = self.forward_outputs(batch).losses
        k = max(1, round(min(1.0, self.hp.start + self.hp.step * self.epoch) * len(losses)))
        self.log_step(selected=k / len(losses))
        return losses[losses.detach().topk(k, largest=False).indices].mean()
