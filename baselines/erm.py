"""ERM: plain cross-entropy on the training split, the reference every gain is measured against
(docs/methods/erm.md).
"""
from molere.registry import MethodCard, register_method
from molere.trainer import Trainer


@register_method("erm")
class ERM(Trainer):
    """Empirical risk minimisation: unweighted cross-entropy on the training split."""

    card = MethodCard(label="ERM", name="Empirical risk minimisation", role="reference", color="black", rank=0)

    saves_pool_margins = True   # its margins on train + val rank the data for the train-twice methods
