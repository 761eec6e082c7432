"""Model layer: shapes, the features/head split, head parameter names, clear errors, determinism."""
import time

import pytest
import torch

from benchmarks.models import build_model, model_factory
from molere.registry import MODELS
from molere.config import ConfigError
from molere.registry import UnknownNameError

DIGITS, FASHION = (1, 8, 8), (1, 28, 28)
SMALL = [("mlp", {"hidden": [32, 16]}), ("mlp", {"hidden": [32], "batchnorm": True, "dropout": 0.1}),
         ("cnn", {"channels": [8, 16]}), ("resnet_small", {"depth": 8, "width": 8})]


def check_split(model, shape, num_classes, batch=4):
    """forward shape, forward == forward_head(forward_features) == classifier(pre-logits), head names ==
    classifier params."""
    model.eval()
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        out = model(x)
        split = model.forward_head(model.forward_features(x))
        via_pre_logits = model.get_classifier()(model.forward_head(model.forward_features(x), pre_logits=True))
    assert out.shape == (batch, num_classes)
    assert torch.allclose(out, split, atol=1e-6)
    assert torch.allclose(out, via_pre_logits, atol=1e-5)   # the head-only look-ahead's view of the model
    names = dict(model.named_parameters())
    head = model.head_param_names
    clf_ids = {id(p) for p in model.get_classifier().parameters()}
    assert clf_ids and {id(names[n]) for n in head} == clf_ids and len(head) == len(clf_ids)
    assert set(head) < set(names)
    assert isinstance(model.get_classifier(), torch.nn.Linear)
    assert model.get_classifier().out_features == num_classes


@pytest.mark.parametrize("name,opts", SMALL)
@pytest.mark.parametrize("shape", [DIGITS, FASHION])
def test_small_models_split(name, opts, shape):
    model = build_model(name, 7, shape, opts)
    check_split(model, shape, 7)
    model.train()  # a training-mode backward reaches the head and the body
    model(torch.randn(4, *shape)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_mlp_on_vectors_and_defaults():
    model = build_model("mlp", 10, (40,))
    check_split(model, (40,), 10)
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [256, 256, 10]
    assert model.head_param_names == ["head.weight", "head.bias"]
    linear = build_model("mlp", 3, (40,), {"hidden": []})  # logistic regression: features = input
    assert linear.forward_features(torch.randn(2, 40)).shape == (2, 40)


def test_deep_cnn_still_works_on_digits():
    check_split(build_model("cnn", 10, DIGITS, {"channels": [8, 8, 8, 8, 8]}), DIGITS, 10)


def test_resnet_depth_sets_block_count():
    from benchmarks.models import BasicBlock
    model = build_model("resnet_small", 10, (3, 32, 32), {"depth": 14, "width": 4})
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 6
    assert model.get_classifier().in_features == 16


@pytest.mark.parametrize("name", ["cnn", "resnet_small", "timm/resnet18"])
def test_image_models_reject_flat_input(name):
    with pytest.raises(ConfigError) as exc:
        build_model(name, 10, (40,))
    msg = str(exc.value)
    assert "\n" not in msg and "needs image input (C, H, W); got shape (40,)" in msg
    assert name.split("/")[0] in msg


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownNameError) as exc:
        build_model("mpl", 10, (40,))
    msg = str(exc.value)
    assert "\n" not in msg and "'mpl'" in msg and all(n in msg for n in ("mlp", "cnn", "resnet_small", "timm"))


@pytest.mark.parametrize("name,opts,field", [
    ("mlp", {"hiden": [8]}, "model.options.hiden: unknown field"),
    ("mlp", {"dropout": 1.5}, "model.options.dropout"),
    ("cnn", {"channels": []}, "model.options.channels"),
    ("resnet_small", {"depth": 21}, "model.options.depth"),
    ("timm", {"arch": "resnet18", "pretrainde": True}, "model.options.pretrainde: unknown field"),
    ("timm", {}, "model.options.arch: required"),
    ("timm", {"arch": "resnet18", "kwargs": {"num_classes": 3}}, "model.options.kwargs"),
    ("timm/resnet18", {"arch": "vit_tiny_patch16_224"}, "model.options.arch"),
])
def test_option_errors_are_one_line(name, opts, field):
    with pytest.raises(ConfigError) as exc:
        build_model(name, 10, (3, 32, 32), opts)
    assert "\n" not in str(exc.value) and field in str(exc.value)


def test_bad_num_classes_and_shape():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", 0, (40,))
    with pytest.raises(ConfigError, match="input_shape"):
        build_model("mlp", 3, ())


def test_unknown_timm_arch_hints_close_names():
    with pytest.raises(ConfigError) as exc:
        build_model("timm", 10, (3, 32, 32), {"arch": "resnet_18"})
    msg = str(exc.value)
    assert "\n" not in msg and "'resnet_18'" in msg and "resnet18" in msg and "list_models" in msg


def test_timm_resnet18_on_32px():
    model = build_model("timm", 10, (3, 32, 32), {"arch": "resnet18"})
    check_split(model, (3, 32, 32), 10, batch=2)
    assert model.head_param_names == ["fc.weight", "fc.bias"]


def test_timm_shorthand_and_grayscale():
    model = build_model("timm/resnet18", 5, FASHION)
    assert model.conv1.in_channels == 1
    check_split(model, FASHION, 5, batch=2)


@pytest.mark.parametrize("opts", [{"img_size": 32}, {}])  # {}: img_size follows the input shape
def test_timm_vit_small_images(opts):
    model = build_model("timm", 10, (3, 32, 32), {"arch": "vit_tiny_patch16_224", **opts})
    check_split(model, (3, 32, 32), 10, batch=2)
    assert model.head_param_names == ["head.weight", "head.bias"]


def test_timm_img_size_ignored_by_size_agnostic_arch():
    model = build_model("timm", 4, (3, 16, 16), {"arch": "resnet18", "img_size": 16, "drop_rate": 0.2})
    check_split(model, (3, 16, 16), 4, batch=2)


def test_timm_bad_kwargs_are_one_line():
    with pytest.raises(ConfigError) as exc:
        build_model("timm", 4, (3, 16, 16), {"arch": "resnet18", "kwargs": {"no_such_arg": 1}})
    assert "\n" not in str(exc.value) and "no_such_arg" in str(exc.value)


def test_pretrained_offline_fails_fast_and_clearly(monkeypatch):
    import huggingface_hub.constants as hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)  # read at import; patch the live value too
    start = time.perf_counter()
    with pytest.raises(ConfigError) as exc:
        build_model("timm/resnet18", 10, (3, 32, 32), {"pretrained": True})
    assert time.perf_counter() - start < 5
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("model.options.pretrained: weights for 'resnet18'")
    assert "pretrained: false" in msg


@pytest.mark.parametrize("name,opts", SMALL[:1] + SMALL[2:] + [("timm/resnet18", {})])
def test_same_seed_same_weights(name, opts):
    def weights(seed):
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_model(name, 10, (3, 16, 16), opts).parameters()]
    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_model_factory_builds_fresh_models_and_validates_early():
    make = model_factory("cnn", 3, DIGITS, {"channels": [4]})
    m1, m2 = make(), make()
    assert m1 is not m2 and m1.head.weight is not m2.head.weight
    check_split(m2, DIGITS, 3)
    with pytest.raises(ConfigError, match="needs image input"):
        model_factory("cnn", 3, (40,))
    with pytest.raises(ConfigError, match="unknown timm architecture"):
        model_factory("timm/not_a_model", 3, DIGITS)


def test_registry_describes_every_model():
    rows = {name: (doc, defaults) for name, doc, defaults in MODELS.describe()}
    assert {"mlp", "cnn", "resnet_small", "timm"} <= set(rows)
    assert rows["mlp"][1]["hidden"] == [256, 256] and rows["resnet_small"][1]["depth"] == 20
    assert all(doc for doc, _ in rows.values())
