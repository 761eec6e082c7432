"""ERM: plain cross-entropy on the training split, the reference every gain is measured against
(docs/methods/erm.md).
"""
from molere.data import require_val
from molere.registry import register_method
from molere.trainer import Trainer


@register_method("erm")
class ERM(Trainer):
    """Empirical risk minimisation: unweighted cross-entropy on the training split."""

    role = "reference"


@register_method("erm_train_val")
class ERMTrainVal(Trainer):
    """ERM on train + the official val split pooled: a meta method's validation data used as plain training
    data (the paper's Table 4 control "ERM (IN1K+INR)" when val is ImageNet-R's validation half)."""

    trains_on_val = True   # no val/* metrics: val is training data here

    def split(self):
        require_val(self.data, "method 'erm_train_val'", "it pools train + val; use erm")
        pooled = self.data.pool()
        self.info.update(train_size=len(self.data.train), pooled_val_size=len(self.data.val))
        return pooled, None
