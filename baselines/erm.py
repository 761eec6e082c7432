"""ERM: plain cross-entropy on the training split (the reference every gain is measured against).

Follows the classifier settings of the run (`TrainConfig`: SGD/AdamW, step or cosine schedule,
weight decay, batch size, epochs); no hyperparameters of its own.
"""
from molere.config import ConfigError
from molere.data import ExampleSet
from molere.registry import register_method
from molere.trainer import Trainer


@register_method("erm")
class ERM(Trainer):
    """Empirical risk minimisation: unweighted cross-entropy on the training split."""

    saves_pool_margins = True   # its margins on train + val rank the data for the train-twice methods


@register_method("erm_train_val")
class ERMTrainVal(Trainer):
    """ERM on train + the official val split pooled: a meta method's validation data used as plain training
    data (the paper's Table 4 control "ERM (IN1K+INR)" when val is ImageNet-R's validation half)."""

    trains_on_val = True   # no val/* metrics: val is training data here

    def split(self):
        if self.data.val is None or len(self.data.val) == 0:
            raise ConfigError(f"method erm_train_val: dataset {self.data.name!r} has no validation split to pool "
                              f"into training")
        pooled = ExampleSet.concat(self.data.train, self.data.val)
        self.info.update(train_size=len(self.data.train), pooled_val_size=len(self.data.val))
        return pooled, None
