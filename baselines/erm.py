"""ERM: plain cross-entropy on the training split (the reference every gain is measured against).

Follows the classifier settings of the run (`TrainConfig`: SGD/AdamW, step or cosine schedule,
weight decay, batch size, epochs); no hyperparameters of its own.
"""
from molere.registry import MethodCard, register_method
from molere.trainer import Trainer


@register_method("erm")
class ERM(Trainer):
    """Empirical risk minimisation: unweighted cross-entropy on the training split."""

    card = MethodCard(label="ERM", name="Empirical risk minimisation", role="reference", color="black", rank=0)

    saves_pool_margins = True   # its margins on train + val rank the data for the train-twice methods
