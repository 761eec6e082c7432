"""Learned per-class weights as a plugin method: a `ReweightingTrainer` (meta set: `meta_source`'s
default), and its same-split control."""
import torch
from pydantic import Field

from molere.registry import register_method
from molere.reweighting import MetaSourceHparams, ReweightingHparams, ReweightingTrainer, meta_source_split
from molere.trainer import Trainer


@register_method("class_weights")
class ClassWeights(ReweightingTrainer):
    """Learned class weights: w_i = C·softmax(a)_{y_i}, a meta-learned on the meta set."""

    display = {"label": "Class-W", "name": "Learned class weights", "color": "#7f7f7f"}

    class Hparams(ReweightingHparams):
        meta_lr: float = Field(1.0, gt=0, description="SGD learning rate of the class logits a")

    def setup(self):
        self.class_logits = torch.nn.Parameter(torch.zeros(self.data.num_classes, device=self.device))

    def example_weights(self, batch, out):
        return self.data.num_classes * torch.softmax(self.class_logits, 0)[batch.y]

    def meta_parameters(self):
        return [self.class_logits]

    def meta_optimizer(self):
        return torch.optim.SGD(self.meta_parameters(), lr=self.hp.meta_lr)


@register_method("class_weights_control")
class ClassWeightsControl(Trainer):
    """Control of class_weights: ERM on its training split (the meta set withheld, no reweighting)."""

    role, control_of = "control", "class_weights"
    display = {"label": "ERM, meta set withheld"}
    Hparams = MetaSourceHparams

    def split(self):
        return meta_source_split(self.data, self.hp, self.context.seed)[0], None
