"""WILDS datasets (camelyon17, iwildcam, waterbirds) through the `wilds` package, with its official eval."""
from __future__ import annotations

import numbers
import os
import sys
import types
import warnings

import numpy as np
import torch
from pydantic import Field

from benchmarks.data.datasets.common import DatasetOptions, require_path
from benchmarks.data.datasets.images import RootDataset, uint8_tail
from molere.registry import register_dataset
from molere.config import ConfigError
from molere.data import ExampleSet, TaskData

_wilds = None


def _group_mean(values: torch.Tensor, groups: torch.Tensor, n_groups: int):
    """Per-group mean of `values` (0 for empty groups) and per-group counts, in plain torch."""
    from wilds.common.utils import get_counts
    assert values.device == groups.device and values.numel() == groups.numel()
    counts = get_counts(groups, n_groups)
    totals = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, values)
    return totals / counts.clamp(min=1).to(values.dtype), counts


def wilds_module():
    """Import wilds once: no network version check, and group metrics that need no torch_scatter."""
    global _wilds
    if _wilds is None:
        # wilds' import starts a thread that asks the package index (no timeout) whether `outdated` and
        # wilds are current; import it against a local stand-in for `outdated` that answers "current"
        previous = sys.modules.get("outdated")
        stand_in = types.ModuleType("outdated")
        stand_in.check_outdated = lambda package, version, *a, **k: (False, version)
        sys.modules["outdated"] = stand_in
        try:
            import wilds
        finally:
            if previous is None:
                sys.modules.pop("outdated", None)
            else:
                sys.modules["outdated"] = previous
        import wilds.common.metrics.all_metrics as all_metrics
        import wilds.common.metrics.loss as loss
        import wilds.common.metrics.metric as metric
        import wilds.common.utils as utils
        for mod in (utils, metric, all_metrics, loss):
            mod.avg_over_groups = _group_mean
        _wilds = wilds
    return _wilds


class _Wilds(RootDataset):
    """Base of the WILDS image datasets; subclasses set the name, data folder and transform style."""
    wilds_name: str
    data_dir: str
    style = "resize"

    class Options(DatasetOptions):
        image_size: int = Field(96, gt=0)
        augment: bool = True
        val_split: str = Field("val", description="official split used as validation (val = OOD, id_val)")

    def val_shift(self) -> str:
        kind = "in-distribution" if self.options.val_split.startswith("id_") else "out-of-distribution"
        return f"the official WILDS {self.options.val_split!r} split ({kind}, fixed by the dataset)"

    def _how(self, root) -> str:
        return (f"download with `python -c \"import wilds; wilds.get_dataset('{self.wilds_name}', "
                f"root_dir='{root}', download=True)\"` on a machine with network")

    def check(self, root: str | None) -> None:
        require_path(root, self.registered_name, self._how(root))
        for f in ("RELEASE_" + self.data_dir.rsplit("_", 1)[1] + ".txt", "metadata.csv"):
            require_path(os.path.join(root, self.data_dir, f), self.registered_name, self._how(root))

    def load(self, root: str | None, seed: int) -> TaskData:
        o = self.options
        self.check(root)
        with warnings.catch_warnings():   # pandas 3 hands wilds read-only arrays; harmless
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            ds = wilds_module().get_dataset(dataset=self.wilds_name, root_dir=root, download=False)
        splits = [s for s in ds.split_dict if len(ds.get_subset(s).indices)]
        if o.val_split not in splits or o.val_split in ("train", "test"):
            allowed = [s for s in splits if s not in ("train", "test")]
            raise ConfigError(f"val_split: one of {allowed} for {self.registered_name} (got {o.val_split!r})")
        train_tf, eval_tf = self.transforms(self.style, o.image_size, o.augment, crop_scale=(0.7, 1.0))
        from wilds.datasets.wilds_dataset import WILDSSubset
        # one source over the whole dataset (a subset of everything), so positions are wilds' global indices
        everything = np.arange(len(ds))
        sources = tuple(WILDSSubset(ds, everything, uint8_tail(tf)[0]) for tf in (train_tf, eval_tf))
        for src, tf in zip(sources, (train_tf, eval_tf)):
            src.normalize = uint8_tail(tf)[1]   # uint8 items, normalised on the device (molere.data.Batch)
        groups = ds._eval_grouper.metadata_to_group(ds.metadata_array)
        y = torch.as_tensor(ds.y_array, dtype=torch.long)

        def subset(split: str) -> ExampleSet:
            pos = np.asarray(ds.get_subset(split).indices, dtype=np.int64)
            idx = torch.from_numpy(pos)
            return ExampleSet(y[idx], source=sources[0], positions=pos, eval_source=sources[1],
                              groups=groups[idx], ids=idx, metadata=ds.metadata_array[idx])

        extras = {("ood_val" if s == "val" else s): subset(s) for s in splits
                  if s not in ("train", "test", o.val_split)}

        def evaluator(split_name: str, preds: torch.Tensor, examples: ExampleSet) -> dict[str, float]:
            preds = torch.as_tensor(preds)
            if preds.ndim == 2:
                preds = preds.argmax(1)
            results, _ = ds.eval(preds.long().cpu(), examples.true_labels.cpu(), examples.metadata.cpu())
            return {k: float(v) for k, v in results.items()
                    if isinstance(v, numbers.Real) or (isinstance(v, torch.Tensor) and v.numel() == 1)}

        return TaskData(self.registered_name, subset("train"), subset("test"), int(ds.n_classes),
                        (3, o.image_size, o.image_size), val=subset(o.val_split), extra_tests=extras,
                        evaluator=evaluator,
                        info={"n_groups": int(ds._eval_grouper.n_groups), "val_split": o.val_split,
                              "group_by": list(ds._eval_grouper.groupby_fields)})


@register_dataset("camelyon17")
class Camelyon17(_Wilds):
    """Camelyon17-WILDS tumour patches (96x96); OOD hospitals for val/test, groups = slides."""
    wilds_name, data_dir = "camelyon17", "camelyon17_v1.0"


@register_dataset("waterbirds")
class Waterbirds(_Wilds):
    """Waterbirds (CUB birds on Places backgrounds); groups = (background, bird), metric acc_wg."""
    wilds_name, data_dir, style = "waterbirds", "waterbirds_v1.0", "crop"

    class Options(_Wilds.Options):
        image_size: int = Field(224, gt=0)


@register_dataset("iwildcam")
class IWildCam(_Wilds):
    """iWildCam2020-WILDS camera-trap species (182 classes); groups = camera locations, macro F1."""
    wilds_name, data_dir = "iwildcam", "iwildcam_v2.0"

    class Options(_Wilds.Options):
        image_size: int = Field(448, gt=0)
