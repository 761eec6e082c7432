"""Model layer: small built-in networks and any timm model behind one `build_model` call.

Every model follows timm's split, which the meta-learning engine relies on:
``forward(x) == forward_head(forward_features(x))``, ``forward_head(h, pre_logits=True)`` gives the
pre-logit features (pooled, what the head consumes), ``get_classifier()`` is the final linear layer
that maps them to the logits, and ``head_param_names`` lists that layer's parameter names (as in
``named_parameters()``), i.e. the parameters of a head-only look-ahead.

A registry entry is a callable ``entry(num_classes, input_shape, opts) -> nn.Module`` with a nested
``Options(Strict)`` class; it may also define ``check(num_classes, input_shape, opts)`` to reject bad
input before anything is built.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Callable

import torch
from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator
from torch import nn

from molere.registry import MODELS, register_model
from molere.config import ConfigError, Strict, validate

TIMM_PREFIX = "timm/"


# ----------------------------------------------------------------------------- protocol helpers
def classifier_param_names(model: nn.Module) -> list[str]:
    """Names (as in `model.named_parameters()`) of the parameters of `model.get_classifier()`."""
    clf = model.get_classifier()
    modules = clf if isinstance(clf, (tuple, list)) else (clf,)
    ids = {id(p) for m in modules for p in m.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def image_shape(name: str, input_shape: tuple) -> tuple[int, int, int]:
    """`input_shape` as (C, H, W), or a one-line ConfigError naming the model."""
    if len(input_shape) != 3:
        raise ConfigError(f"model {name!r} needs image input (C, H, W); got shape {tuple(input_shape)}")
    return tuple(input_shape)  # type: ignore[return-value]


class SplitNet(nn.Module):
    """Base of the built-in models: `body` maps inputs to features, `head` (nn.Linear) to logits."""
    body: nn.Module
    head: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return features if pre_logits else self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.head

    @property
    def head_param_names(self) -> list[str]:
        return classifier_param_names(self)


# ----------------------------------------------------------------------------- built-in models
@register_model("mlp")
class MLP(SplitNet):
    """Multi-layer perceptron on the flattened input (ReLU, optional batch norm and dropout)."""

    class Options(Strict):
        hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 256],
                                          description="widths of the hidden layers ([] = linear model)")
        dropout: float = Field(0.0, ge=0, lt=1)
        batchnorm: bool = False

    def __init__(self, num_classes: int, input_shape: tuple, opts: Options):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = 1
        for d in input_shape:
            width *= int(d)
        for h in opts.hidden:
            layers.append(nn.Linear(width, h))
            if opts.batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU(inplace=True))
            if opts.dropout > 0:
                layers.append(nn.Dropout(opts.dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register_model("cnn")
class SmallCNN(SplitNet):
    """Small CNN: (conv3x3-BN-ReLU-maxpool) blocks, global average pool, linear head."""

    class Options(Strict):
        channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1,
                                            description="output channels of each conv block")

    @staticmethod
    def check(num_classes: int, input_shape: tuple, opts: Options) -> None:
        image_shape("cnn", input_shape)

    def __init__(self, num_classes: int, input_shape: tuple, opts: Options):
        super().__init__()
        c_in, height, width = image_shape("cnn", input_shape)
        layers: list[nn.Module] = []
        for c in opts.channels:
            # ceil_mode only where a side is odd (it keeps 1x1 maps at 1x1 in deep stacks on 8x8
            # digits); on even sides it changes nothing but costs as much as the convolution on CPU
            odd = height % 2 == 1 or width % 2 == 1
            layers += conv_bn_relu(c_in, c) + [nn.MaxPool2d(2, ceil_mode=odd)]
            c_in, height, width = c, -(-height // 2) if odd else height // 2, -(-width // 2) if odd else width // 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (1x1 conv + BN shortcut when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register_model("resnet_small")
class SmallResNet(SplitNet):
    """CIFAR-style ResNet (depth 6n+2: three stages of n BasicBlocks, widths w, 2w, 4w), linear head."""

    class Options(Strict):
        depth: int = Field(20, description="6n+2: 8, 14, 20, 32, 44, 56, 110, ...")
        width: PositiveInt = Field(16, description="channels of the first stage")

        @field_validator("depth")
        @classmethod
        def _six_n_plus_two(cls, v: int) -> int:
            if v < 8 or (v - 2) % 6:
                raise ValueError("depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)")
            return v

    @staticmethod
    def check(num_classes: int, input_shape: tuple, opts: Options) -> None:
        image_shape("resnet_small", input_shape)

    def __init__(self, num_classes: int, input_shape: tuple, opts: Options):
        super().__init__()
        c_in = image_shape("resnet_small", input_shape)[0]
        n, w = (opts.depth - 2) // 6, opts.width
        layers: list[nn.Module] = conv_bn_relu(c_in, w)
        c = w
        for stage, c_out in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                layers.append(BasicBlock(c, c_out, 2 if stage > 0 and i == 0 else 1))
                c = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# ----------------------------------------------------------------------------- timm
HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
_HARNESS_KWARGS = ("pretrained", "num_classes", "in_chans", "img_size", "drop_rate", "pretrained_cfg_overlay")
WEIGHT_EXTENSIONS = (".safetensors", ".pth", ".bin")


def _check_timm(num_classes: int, input_shape: tuple, opts: "timm_model.Options") -> None:
    image_shape("timm", input_shape)
    _check_timm_options(opts)


def _check_timm_options(opts: "timm_model.Options") -> None:
    """The checks that need no input shape (architecture name, reserved kwargs)."""
    import timm

    arch = opts.arch
    if not arch:
        raise ConfigError("model.options.arch: required for model 'timm', e.g. 'resnet18' "
                          "(or name the model 'timm/resnet18')")
    if not arch.startswith(HUB_PREFIXES) and not timm.is_model(arch):
        close = difflib.get_close_matches(arch.split(".")[0], timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.options.arch: unknown timm architecture {arch!r}{hint} "
                          f"(list them with timm.list_models('*pattern*'))")
    if opts.weights is not None and not os.path.isfile(opts.weights):
        raise ConfigError(f"model.options.weights: {opts.weights} not found; give the path of a local "
                          f".safetensors/.pth/.bin weight file")
    clash = sorted(set(opts.kwargs) & set(_HARNESS_KWARGS))
    if clash:
        raise ConfigError(f"model.options.kwargs: {', '.join(clash)} set by the harness; use the "
                          f"model options (pretrained, weights, img_size, drop_rate) instead")


def _pretrained_cfg(arch: str) -> Any:
    from timm.models import get_pretrained_cfg

    if arch.startswith(HUB_PREFIXES):
        return None
    try:
        return get_pretrained_cfg(arch)
    except RuntimeError as exc:  # invalid pretrained tag
        raise ConfigError(f"model.options.arch: {exc}") from None


def _is_download_error(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    root = type(exc).__module__.split(".")[0]
    return root in ("huggingface_hub", "requests", "httpx", "httpcore", "urllib3")


@register_model("timm")
def timm_model(num_classes: int, input_shape: tuple, opts: "timm_model.Options") -> nn.Module:
    """Any timm architecture (`arch`), optionally with pretrained weights from the HF hub cache."""
    import timm

    _check_timm(num_classes, input_shape, opts)
    arch, (c, h, w) = opts.arch, image_shape("timm", input_shape)
    cfg = _pretrained_cfg(arch)
    if opts.pretrained and cfg is not None and not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ConfigError(f"model.options.pretrained: timm has no pretrained weights for {arch!r}; "
                          f"set pretrained: false")
    kwargs: dict[str, Any] = dict(opts.kwargs)
    if opts.drop_rate > 0:
        kwargs["drop_rate"] = opts.drop_rate
    img_size: Any = opts.img_size
    if img_size is None and cfg is not None and cfg.fixed_input_size and tuple(cfg.input_size[1:]) != (h, w):
        img_size = (h, w)  # fixed-size models (ViT, Swin, ...) are built for the task's input size
    if opts.weights is not None:   # a local file instead of the hub (timm adapts the classifier to num_classes);
        # a state dict, never the original .npz a custom_load entry (the in21k ViTs) names
        kwargs["pretrained_cfg_overlay"] = {"file": opts.weights, "custom_load": False}
    create = lambda **extra: timm.create_model(  # noqa: E731
        arch, pretrained=opts.pretrained, num_classes=num_classes, in_chans=c, **kwargs, **extra)
    try:
        try:
            model = create(**({} if img_size is None else {"img_size": img_size}))
        except TypeError as exc:
            if img_size is None or "img_size" not in str(exc):
                raise
            model = create()  # architecture takes any input size; img_size does not apply
    except TypeError as exc:
        raise ConfigError(f"model.options.kwargs: timm {arch!r} rejected its arguments: "
                          f"{str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - only download failures are translated
        if not (opts.pretrained and _is_download_error(exc)):
            raise
        raise ConfigError(f"model.options.pretrained: weights for {arch!r} could not be downloaded "
                          f"(no network?) - pre-download them into the HF cache or set pretrained: "
                          f"false ({type(exc).__name__})") from None
    names = classifier_param_names(model)
    if not names:
        raise ConfigError(f"model.options.arch: timm {arch!r} has no classifier parameters to use as head")
    model.head_param_names = names
    return model


class _TimmOptions(Strict):
    arch: str | None = Field(None, description="timm architecture (required), e.g. resnet18, "
                                               "vit_tiny_patch16_224, resnet18.a1_in1k")
    pretrained: bool = False
    weights: str | None = Field(None, description="local .safetensors / .pth / .bin file of the pretrained "
                                "weights (with pretrained: true); default: timm's hub entry (HF cache)")
    img_size: PositiveInt | None = Field(None, description="input size for fixed-size models "
                                         "(ViT, Swin); default: the task's; ignored by others")
    drop_rate: float = Field(0.0, ge=0, lt=1)
    pretrained_transforms: bool = Field(True, description="with pretrained: true, image transforms follow the "
                                        "weights' data config (mean, std, interpolation, crop_pct; timm.data)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model arguments")


    @model_validator(mode="after")
    def _weights_need_pretrained(self):
        if self.weights is not None:
            if not self.pretrained:
                raise ValueError("weights needs pretrained: true")
            if not self.weights.endswith(WEIGHT_EXTENSIONS):
                raise ValueError(f"weights must be a {', '.join(WEIGHT_EXTENSIONS)} file")
        return self


timm_model.Options = _TimmOptions
timm_model.check = _check_timm
timm_model.check_options = _check_timm_options


def pretrained_data_config(name: str, options: dict | None) -> dict | None:
    """timm's data config of a pretrained timm model's weights (timm.data.resolve_data_config), or None
    (not timm, not pretrained, `pretrained_transforms: false`, or a hub/local-dir model without a known config)."""
    options = dict(options or {})
    if name.startswith(TIMM_PREFIX):
        name, options["arch"] = "timm", options.get("arch") or name[len(TIMM_PREFIX):]
    if name != "timm":
        return None
    opts = validate(timm_model.Options, options, prefix="model.options")
    if not (opts.pretrained and opts.pretrained_transforms):
        return None
    cfg = _pretrained_cfg(opts.arch)
    if cfg is None:
        return None
    from timm.data import resolve_data_config
    return resolve_data_config(pretrained_cfg=cfg.to_dict())


# ----------------------------------------------------------------------------- public API
def parse_model_name(name: str, options: dict | None = None) -> tuple[str, dict]:
    """(registered model name, options) of a model name: 'timm/<arch>' is model 'timm' with options.arch."""
    options = dict(options or {})
    if not name.startswith(TIMM_PREFIX):
        return name, options
    arch = name[len(TIMM_PREFIX):]
    if not arch:
        raise ConfigError(f"model: {name!r} names no timm architecture (e.g. 'timm/resnet18')")
    if options.get("arch") not in (None, arch):
        raise ConfigError(f"model.options.arch: {options['arch']!r} contradicts the model name {name!r}")
    return "timm", {**options, "arch": arch}


def _prepare(name: str, num_classes: int, input_shape: tuple,
             options: dict | BaseModel | None) -> tuple[Callable, int, tuple, BaseModel]:
    if isinstance(options, BaseModel):
        options = options.model_dump()
    name, options = parse_model_name(name, options)
    entry = MODELS.get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes: a positive integer (got {num_classes!r})")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape: a tuple of positive integers (got {input_shape!r})") from None
    if not shape or min(shape) < 1:
        raise ConfigError(f"input_shape: a tuple of positive integers (got {input_shape!r})")
    opts = validate(entry.Options, options, prefix="model.options")
    check = getattr(entry, "check", None)
    if check is not None:
        check(num_classes, shape, opts)
    return entry, num_classes, shape, opts


def build_model(name: str, num_classes: int, input_shape: tuple,
                options: dict | BaseModel | None = None) -> nn.Module:
    """Build registered model `name` (or `timm/<arch>`) for `num_classes` outputs on `input_shape`."""
    entry, num_classes, shape, opts = _prepare(name, num_classes, input_shape, options)
    return entry(num_classes, shape, opts)


def model_factory(name: str, num_classes: int, input_shape: tuple,
                  options: dict | BaseModel | None = None) -> Callable[[], nn.Module]:
    """Validate now; return a zero-argument function that builds a fresh model on every call."""
    entry, num_classes, shape, opts = _prepare(name, num_classes, input_shape, options)
    return lambda: entry(num_classes, shape, opts.model_copy(deep=True))
