"""Declared recipes: a local weight file of the in21k ViT (a custom_load checkpoint in timm's registry) loads
with the timm versions pyproject pins, and the WILDS sweep's recipe is the WILDS reference's."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import benchmarks.data.datasets.wilds_data  # noqa: F401  (registers the datasets)
from benchmarks.data.load import DatasetConfig, load_task
from benchmarks.data.regimes import RegimeConfig
from benchmarks.models import build_model, pretrained_data_config
from benchmarks.sweep.schema import load_sweep
from tests import fakes

ROOT = Path(__file__).resolve().parents[1]


def test_local_in21k_vit_weights_load_whatever_timms_custom_load(tmp_path):
    import timm
    from importlib.metadata import version
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg
    arch = "vit_tiny_patch16_224.augreg_in21k"
    assert get_pretrained_cfg(arch).custom_load                       # the registry's own file is an .npz
    pin = re.search(r'"timm([^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    lo, hi = re.match(r">=([\d.]+),<([\d.]+)", pin.split("#")[0].strip()).groups()
    have = tuple(int(x) for x in version("timm").split(".")[:3])
    assert tuple(int(x) for x in lo.split(".")) <= have < tuple(int(x) for x in hi.split(".")), (pin, have)
    torch.manual_seed(1)
    src = timm.create_model(arch, num_classes=21843, img_size=32, patch_size=8)
    path = tmp_path / "vit_in21k.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = build_model("timm", 5, (3, 32, 32), {"arch": arch, "pretrained": True, "weights": str(path),
                                                 "kwargs": {"patch_size": 8}})
    for name in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "pos_embed", "norm.weight"):
        assert torch.equal(model.state_dict()[name], src.state_dict()[name]), name
    assert model.get_classifier().out_features == 5                   # the 21,843-class head replaced


def test_wilds_sweep_matches_the_wilds_reference_recipe(tmp_path):
    sweep = load_sweep(ROOT / "sweeps" / "wilds.yaml")
    assert sweep.train.schedule == "constant"                          # WILDS: scheduler None
    by_name = {d.name: d for d in sweep.datasets}
    cam, iwc = by_name["camelyon17"], by_name["iwildcam"]
    assert (cam.train["epochs"], cam.train["batch_size"], cam.train["lr"], cam.train["weight_decay"]) == (5, 32, 1e-3, 0.01)
    assert (iwc.train["epochs"], iwc.train["batch_size"], iwc.train["lr"], iwc.train["weight_decay"]) == (12, 16, 3e-5, 0.0)
    assert not cam.options["augment"] and not iwc.options["augment"]
    assert pretrained_data_config(sweep.model.name, sweep.model.options) is None   # the datasets' transforms
    fakes.make_fake_iwildcam(tmp_path, size=20)
    task = load_task(DatasetConfig(name="iwildcam", root=str(tmp_path), options=iwc.options), RegimeConfig(), 0)
    from torchvision import transforms as T
    train, evaluation = task.train.source, task.train.eval_source
    for src in (train, evaluation):                                    # WILDS image_base: resize, ImageNet stats
        ops = [op for op in src.transform.transforms if not isinstance(op, T.Lambda)]
        assert [type(op) for op in ops] == [T.Resize, T.PILToTensor] and ops[0].size == (448, 448)
        assert src.normalize == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize("name", ["imagenet", "wilds"])
def test_sweep_headers_state_recipe_and_cost(name):
    text = (ROOT / "sweeps" / f"{name}.yaml").read_text()
    header = text[: text.index("\nname:")]
    assert "# Deviations" in header and ("augmentation" in header or "no augmentation" in header)
    if name == "imagenet":
        assert "--dry-run" in header and "GPU-hours" in header
