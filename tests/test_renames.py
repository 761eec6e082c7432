"""Renamed method hyperparameters (`Strict.renamed`): the old name is a one-line error naming the new one,
stored configs under the old name still load, and trial ids stay those from before the rename."""
import pytest

from molere.config import ConfigError, upgrade, validate

from benchmarks.catalog import METHODS
from benchmarks.trial.config import TrialConfig, identity, resolve


@pytest.mark.parametrize("method", ["molere", "fsr"])
def test_warmup_epochs_renamed(method):
    hp = METHODS.get(method).Hparams
    with pytest.raises(ConfigError, match=r"^method.hparams.warmup_epochs: renamed to 'meta_warmup_epochs'$"):
        validate(hp, {"warmup_epochs": 1}, "method.hparams")
    assert hp.model_validate(upgrade(hp, {"warmup_epochs": 1})).meta_warmup_epochs == 1   # a stored plan
    cfg = resolve(TrialConfig.model_validate({"dataset": {"name": "digits"},
                                              "method": {"name": method, "hparams": {"meta_warmup_epochs": 1}}}))
    kept = identity(cfg)["method"]["hparams"]
    assert kept["warmup_epochs"] == 1 and "meta_warmup_epochs" not in kept   # the id hashes the old name


@pytest.mark.parametrize("method", ["molere", "fsr"])
def test_dry_run_shows_an_old_name_at_its_default_as_unchanged(method):
    from benchmarks.sweep.show import _hp_text
    default = METHODS.get(method).Hparams().meta_warmup_epochs
    assert _hp_text(method, {"warmup_epochs": default}) == "{}"
    assert _hp_text(method, {"warmup_epochs": 7}) == '{"meta_warmup_epochs":7}'


def test_a_field_added_later_keeps_stored_ids_at_its_default():
    def kept(**hp):
        cfg = resolve(TrialConfig.model_validate({"dataset": {"name": "digits"},
                                                  "method": {"name": "rho_loss", "hparams": hp}}))
        return identity(cfg)["method"]["hparams"]
    assert "meta_labels" not in kept() and "meta_labels" not in kept(meta_labels="observed")
    assert kept(meta_labels="true")["meta_labels"] == "true"
