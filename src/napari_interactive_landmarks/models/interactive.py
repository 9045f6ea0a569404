"""The interactive keypoint model of Kim et al. (MICCAI 2022): HRNet + OCR, hint fusion and
interaction-guided gating. One config dict builds it (``build_model``); the same dict is stored with the
weights in ``weights_manifest.yaml``.

The config's ``arch`` picks the network (``ARCHS``): ``interactive-hrnet-ocr`` (Kim et al.), ``farnet``
(Ao & Wu 2022, ``models.farnet``) or ``chh-unet`` (the ResNet-34 U-Net of McCouat & Voiculescu 2022,
``models.chh``). Every one takes the same interaction — hint fusion at the stem, interaction-guided gating of
the features before the decoder, switched by ``hint_fusion`` / ``gating`` — so ``hint_fusion: false, gating:
none`` is the published network. Each declares its output stride (``output_stride``: 4 for HRNet, 1 for
FARNet and the U-Net), which the codec is built with.

Network-space conventions (this module and ``codecs`` only): the image is a (B, 1, H, W) tensor scaled to
[-1, 1]; hints are (B, 2K, H/2, W/2): the K previous-prediction maps then the K click maps, rendered at the
stem's stride 2 (where the reference adds them after a stride-2 conv of full-resolution maps — same place,
4× less work); outputs are logits at stride 4, which ``upsample_logits`` brings to any resolution
(bilinear, as in the reference).
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..codecs.heatmaps import render_hint_channels, render_hints

from . import chh, farnet
from .hrnet import HRNet, conv_bn
from .ocr import OCRHead

PRESETS = {
    # The paper's configuration (HRNet-W32 + OCR 256/128), for a GPU. ≈ 19 GFLOPs at 512 × 256.
    "hrnet-w32": {
        "backbone": {"stem_channels": 64, "layer1_blocks": 4, "layer1_planes": 64, "widths": [32, 64, 128, 256],
                     "stage_modules": [1, 4, 3], "stage_blocks": [4, 4, 4]},
        "ocr": {"mid_channels": 256, "key_channels": 128, "aux_channels": None},
        "gating_channels": 256,
    },
    # Compact configuration for CPU training and interactive CPU inference.
    "hrnet-w18s": {
        "backbone": {"stem_channels": 32, "layer1_blocks": 1, "layer1_planes": 32, "widths": [18, 36, 72, 144],
                     "stage_modules": [1, 1, 1], "stage_blocks": [2, 2, 2]},
        "ocr": {"mid_channels": 96, "key_channels": 48, "aux_channels": 96, "conv_kernel": 1},
        "gating_channels": 64,
    },
    # Tiny configuration for tests, the synthetic demo and the sample-data model (trains in minutes on a CPU).
    "hrnet-tiny": {
        "backbone": {"stem_channels": 16, "layer1_blocks": 1, "layer1_planes": 16, "widths": [8, 16, 32, 64],
                     "stage_modules": [1, 1, 1], "stage_blocks": [1, 1, 1]},
        "ocr": {"mid_channels": 32, "key_channels": 16, "aux_channels": 32, "conv_kernel": 1},
        "gating_channels": 32,
    },
}

DEFAULTS = {
    "arch": "interactive-hrnet-ocr",
    "preset": "hrnet-w18s",
    "num_landmarks": None,
    "in_channels": 1,
    "hint_fusion": True,       # ablation switch: False ignores clicks/previous inside the network
    "gating": "max",           # "max" (paper), "avg" (SE-style ablation) or "none"
    "hint_scale_init": 0.05,
    # how the logits were trained, and so how they are decoded: "sigmoid" = per-pixel BCE on Gaussian targets
    # (Kim et al.); "softmax" = 2-D softmax + NLL (McCouat & Voiculescu), decoded from the logits themselves
    "heatmap": "sigmoid",
    # sigma (network-input pixels) of the Gaussians the model draws for its clicks and previous prediction; set
    # from the model card's sigma when a model is built for training or inference (not a parameter)
    "hint_sigma": None,
}


# Each architecture: its presets, the preset used when a config names none, the stride of its logits, and
# the multiple its input size must be (its total stride: encoder and decoder maps must line up exactly).
ARCHS = {
    "interactive-hrnet-ocr": {"presets": PRESETS, "default_preset": "hrnet-w18s", "output_stride": 4,
                              "input_multiple": 1},
    "farnet": {"presets": farnet.PRESETS, "default_preset": "farnet", "output_stride": 1, "input_multiple": 32},
    "chh-unet": {"presets": chh.PRESETS, "default_preset": "chh-resnet34", "output_stride": 1,
                 "input_multiple": 32},
    # trained networks served together (``models.ensemble``): the stride is their members'; each member's input
    # size is checked against its own architecture
    "ensemble": {"presets": {}, "default_preset": None, "output_stride": None, "input_multiple": 1},
}


def _arch(config: dict) -> dict:
    arch = config.get("arch") or DEFAULTS["arch"]
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture '{arch}' in the model config; known: {', '.join(ARCHS)}")
    return ARCHS[arch]


def output_stride(config: dict) -> int:
    """The stride of the logits of the model ``config`` builds (4: HRNet; 1: FARNet, the CHH U-Net)."""
    if _is_ensemble(config):
        return output_stride(config["members"][0]["config"])
    return int(_arch(config)["output_stride"])


def _is_ensemble(config: dict) -> bool:
    return (config.get("arch") or DEFAULTS["arch"]) == "ensemble"


def check_input_size(config: dict, input_size) -> None:
    """One clear ValueError when the architecture of ``config`` cannot take ``input_size`` (H, W)."""
    m = int(_arch(config)["input_multiple"])
    h, w = (int(v) for v in input_size)
    if h % m or w % m:
        fit = [max(m, round(v / m) * m) for v in (h, w)]
        raise ValueError(f"input_size [{h}, {w}] does not suit the '{config.get('arch')}' architecture: H and W must "
                         f"be multiples of {m} (its total stride), e.g. {fit}")


def resolve_config(config: dict) -> dict:
    """Fill a (possibly partial) config dict with the preset and defaults; the result is self-contained."""
    spec = _arch(config)
    if _is_ensemble(config):
        from .ensemble import resolve_ensemble_config

        cfg = resolve_ensemble_config(config, resolve_config)
        for i, m in enumerate(cfg["members"]):
            try:
                check_input_size(m["config"], m["input_size"])
            except ValueError as exc:
                raise ValueError(f"ensemble member {i}: {exc}") from None
        return cfg
    cfg = copy.deepcopy(DEFAULTS)
    cfg["preset"] = spec["default_preset"]
    cfg.update(copy.deepcopy(config))
    preset = cfg.get("preset")
    if preset is not None:
        if preset not in spec["presets"]:
            raise ValueError(f"unknown model preset '{preset}' for architecture '{cfg['arch']}'; known: "
                             f"{', '.join(spec['presets'])}")
        base = copy.deepcopy(spec["presets"][preset])
        for key, val in base.items():  # sub-dicts (backbone, ocr, encoder, …) merged; other keys as defaults
            if isinstance(val, dict):
                val.update(cfg.get(key) or {})
                cfg[key] = val
            elif cfg.get(key) is None:
                cfg[key] = val
    if not cfg.get("num_landmarks"):
        raise ValueError("model config needs 'num_landmarks'")
    if cfg["heatmap"] not in ("sigmoid", "softmax"):
        raise ValueError(f"heatmap must be 'sigmoid' or 'softmax', not {cfg['heatmap']!r}")
    if cfg["gating"] not in ("max", "avg", "none"):
        raise ValueError(f"gating must be 'max', 'avg' or 'none', not {cfg['gating']!r}")
    return cfg


class HintFusion(nn.Module):
    """2K hint maps (stride 2) → 1×1 conv → 16 → LeakyReLU → 3×3 conv → stem channels, times a learnable |s|."""

    def __init__(self, num_landmarks, stem_channels, scale_init=0.05):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2 * num_landmarks, 16, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(16, stem_channels, 3, 1, 1),
        )
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, hints, channels=None):
        """``hints`` the full (B, 2K, h, w) maps; or, with ``channels`` (n,), only those channels' maps (the rest
        being zero, as :func:`render_hint_channels` draws them): the same output without convolving zeros."""
        if channels is None:
            return self.body(hints) * self.scale.abs()
        first, act, rest = self.body
        return rest(act(F.conv2d(hints, first.weight[:, channels], first.bias))) * self.scale.abs()


class InteractionGate(nn.Module):
    """Channel gate from layer1 features + click maps: 3 conv-BN-ReLU, global max (or mean) pool, FC, sigmoid."""

    def __init__(self, in_channels, num_landmarks, out_channels, mid=256, pooling="max"):
        super().__init__()
        self.num_landmarks = num_landmarks
        self.convs = nn.Sequential(conv_bn(in_channels + num_landmarks, mid, 3, 2), conv_bn(mid, mid, 3), conv_bn(mid, mid, 3))
        self.fc = nn.Sequential(nn.Conv2d(mid, 16, 1), nn.ReLU(inplace=True), nn.Conv2d(16, out_channels, 1))
        self.pooling = pooling

    def forward(self, l1, clicks, channels=None):
        """``clicks`` the K click maps; or, with ``channels`` (n,), only those landmarks' click maps (the others zero)."""
        if channels is None:
            clicks = F.adaptive_avg_pool2d(clicks, l1.shape[-2:])
        else:  # pool the drawn maps only; the others pool to zero
            pooled = clicks.new_zeros((l1.shape[0], self.num_landmarks) + tuple(l1.shape[-2:]))
            if len(channels):
                pooled[:, channels] = F.adaptive_avg_pool2d(clicks, l1.shape[-2:]).to(pooled.dtype)
            clicks = pooled
        x = self.convs(torch.cat([l1, clicks], dim=1))
        x = torch.amax(x, dim=(2, 3), keepdim=True) if self.pooling == "max" else x.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.fc(x))


def hint_maps(model, image, hints=None, clicks=None, clicked=None, previous=None):
    """The (B, 2K, ⌈H/2⌉, ⌈W/2⌉) hint maps of one forward pass: ``hints`` as given, else drawn from the clicks
    (``render_hints`` with the model's ``hint_sigma``), else zeros (no interaction). Shared by every architecture."""
    b, _, h, w = image.shape
    k = model.num_landmarks
    if hints is None and clicks is not None:
        if model.hint_sigma is None:
            raise ValueError("this model was built without 'hint_sigma': it cannot draw its click maps")
        if clicked is None:
            clicked = torch.isfinite(clicks).all(-1)
        hints = render_hints(previous, clicks, clicked, (h, w), model.hint_sigma)
    if hints is None:
        hints = image.new_zeros(b, 2 * k, (h + 1) // 2, (w + 1) // 2)
    return hints


def hint_inputs(model, image, hints=None, clicks=None, clicked=None, previous=None):
    """``(maps, channels)`` for the hint fusion and the gate. Without gradients (inference) and without ready-drawn
    ``hints``: only the drawn channels (:func:`render_hint_channels`; one zero channel without clicks) and their indices
    among the 2K — the same result as the full maps, without drawing, convolving and pooling the zeros of every unclicked
    landmark (a few ms of an update on aasce-spine's 68 landmarks; issue 39). Otherwise (training, given ``hints``)
    the full maps of :func:`hint_maps` and None."""
    if hints is not None or torch.is_grad_enabled() or (clicks is not None and model.hint_sigma is None):
        return hint_maps(model, image, hints, clicks, clicked, previous), None
    b, _, h, w = image.shape
    if clicks is None:  # one zero channel stands for all (the first convolution of zeros: its bias, as in full)
        return image.new_zeros(b, 1, (h + 1) // 2, (w + 1) // 2, dtype=torch.float32), \
            torch.zeros(1, dtype=torch.long, device=image.device)
    if clicked is None:
        clicked = torch.isfinite(clicks).all(-1)
    return render_hint_channels(previous, clicks, clicked, (h, w), model.hint_sigma)


def gate_input(maps, channels, k):
    """The gate's click maps (the second K of the 2K hint channels) and their indices, from :func:`hint_inputs`."""
    if channels is None:
        return maps[:, k:], None
    sel = channels >= k
    return maps[:, sel], channels[sel] - k


def _take_config(model: nn.Module, config: dict) -> dict:
    """The resolved config and what every interactive model keeps of it: landmark count, how its logits decode
    (``heatmap``, see DEFAULTS) and the hint maps' sigma."""
    cfg = resolve_config(config)
    model.config = cfg
    model.num_landmarks = cfg["num_landmarks"]
    model.heatmap = cfg["heatmap"]
    model.hint_sigma = None if cfg["hint_sigma"] is None else float(cfg["hint_sigma"])
    return cfg


class InteractiveKeypointModel(nn.Module):
    output_stride = 4  # logits (and aux) at stride 4, upsampled bilinearly (``upsample_logits``)
    aux_stride = None  # the aux logits are read like the main ones
    classifier_weight = "head.cls.weight"  # state-dict key of the per-landmark classifier (K output channels)

    def __init__(self, config: dict):
        super().__init__()
        cfg = _take_config(self, config)
        k = self.num_landmarks
        self.backbone = HRNet(in_channels=cfg["in_channels"], **cfg["backbone"])
        c = self.backbone.out_channels
        self.hint_fusion = HintFusion(k, self.backbone.stem_channels, cfg["hint_scale_init"]) if cfg["hint_fusion"] else None
        self.gate = None
        if cfg["gating"] != "none":
            self.gate = InteractionGate(self.backbone.layer1_channels, k, c, cfg["gating_channels"], cfg["gating"])
        self.head = OCRHead(c, k, **cfg["ocr"])

    def forward(self, image, hints=None, *, clicks=None, clicked=None, previous=None):
        """image (B, 1, H, W) in [-1, 1] → dict(logits, aux) at stride 4.

        The interaction enters as coordinates: ``clicks`` (B, K, 2) (row, col) in network-input pixels with
        ``clicked`` (B, K) bool saying which are real, and ``previous`` (B, K, 2) the previous prediction (used
        only in clicked channels). The model draws its own hint maps from them (``render_hints``, sigma
        ``config['hint_sigma']``) — one implementation for training, validation and inference. ``hints``
        (B, 2K, H/2, W/2) ready-drawn maps may be passed instead; neither = no interaction."""
        k = self.num_landmarks
        hints, channels = hint_inputs(self, image, hints, clicks, clicked, previous)
        stem_hint = self.hint_fusion(hints, channels) if self.hint_fusion is not None else None
        l1, feats = self.backbone(image, stem_hint)
        if self.gate is not None:
            feats = feats * self.gate(l1, *gate_input(hints, channels, k))
        out, aux = self.head(feats)
        return {"logits": out, "aux": aux}


def upsample_logits(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class InteractiveEncoderDecoder(nn.Module):
    """FARNet or the CHH U-Net (``arch: farnet`` / ``chh-unet``) with the interaction of Kim et al.: the hint maps
    (previous prediction + clicks, ``HintFusion``) added to the encoder's stem conv output, and one channel gate
    (``InteractionGate``, from the stride-4 encoder map and the click maps) over every encoder map the decoder
    reads. Same signature and outputs as :class:`InteractiveKeypointModel`; logits at ``output_stride`` (1)."""

    def __init__(self, config: dict):
        super().__init__()
        cfg = _take_config(self, config)
        k = self.num_landmarks
        if cfg["arch"] == "farnet":
            self.net = farnet.FARNet(k, cfg["in_channels"], cfg["encoder"], cfg["msfa"], cfg["fr"])
        else:
            self.net = chh.UNetResNet(k, cfg["in_channels"], cfg["encoder"], cfg["decoder"])
        self.output_stride = self.net.output_stride
        self.aux_stride = self.net.aux_stride
        self.classifier_weight = "net." + self.net.classifier_weight
        self.hint_fusion = HintFusion(k, self.net.stem_channels, cfg["hint_scale_init"]) if cfg["hint_fusion"] else None
        self.gate = None
        if cfg["gating"] != "none":
            src = self.net.channels[self.net.gate_index]
            self.gate = InteractionGate(src, k, sum(self.net.channels), cfg["gating_channels"], cfg["gating"])

    def forward(self, image, hints=None, *, clicks=None, clicked=None, previous=None):
        """image (B, 1, H, W) in [-1, 1] → dict(logits (B, K, H, W), aux: FARNet's stride-2 coarse logits or None);
        the interaction as in :meth:`InteractiveKeypointModel.forward`."""
        k = self.num_landmarks
        hints, channels = hint_inputs(self, image, hints, clicks, clicked, previous)
        stem_hint = self.hint_fusion(hints, channels) if self.hint_fusion is not None else None
        feats = self.net.encode(image, stem_hint)
        if self.gate is not None:
            g = self.gate(feats[self.net.gate_index], *gate_input(hints, channels, k)).split(self.net.channels, dim=1)
            feats = [f * gi for f, gi in zip(feats, g)]
        logits, aux = self.net.decode(image, feats)
        return {"logits": logits, "aux": aux}


class ModelTooLargeError(ValueError):
    """A model config asks for more memory than the machine has (e.g. a width typed with extra zeros)."""


def _size_text(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e3:.1f} kB"


def _physical_memory() -> int | None:
    """This machine's RAM in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def model_size(config: dict) -> tuple[int, int, str, tuple] | None:
    """(parameters, bytes, largest tensor's name, its shape) of the model ``config`` builds, counted on PyTorch's
    meta device (shapes only: nothing is allocated); None when the config does not build."""
    if _is_ensemble(config):
        sizes = [model_size(m["config"]) for m in config.get("members") or []]
        if not sizes or any(s is None for s in sizes):
            return None
        big = max(sizes, key=lambda s: s[1])
        return sum(s[0] for s in sizes), sum(s[1] for s in sizes), big[2], big[3]
    make = InteractiveKeypointModel if (config.get("arch") or DEFAULTS["arch"]) == "interactive-hrnet-ocr" \
        else InteractiveEncoderDecoder
    try:
        with torch.device("meta"):
            model = make(config)
    except Exception:  # noqa: BLE001 — building it for real says what is wrong
        return None
    tensors = [*model.named_parameters(), *model.named_buffers()]
    if not tensors:
        return None
    name, big = max(tensors, key=lambda kv: kv[1].numel())
    return (sum(t.numel() for _, t in model.named_parameters()), sum(t.numel() * t.element_size() for _, t in tensors),
            name, tuple(big.shape))


def build_model(config: dict, source: str | None = None) -> nn.Module:
    """The network of ``config``. One that would not fit in this machine's memory is refused before anything is
    allocated, with one line saying what it asks for (a :class:`ModelTooLargeError`); ``source`` names the file or
    config in it."""
    arch = config.get("arch") or DEFAULTS["arch"]
    _arch(config)  # an unknown architecture: one line naming the known ones
    where = f"{source}: " if source else ""
    size, have = model_size(config), _physical_memory()
    asked = "" if size is None else (f"{size[0]:,} parameters ({_size_text(size[1])} in float32; the largest tensor, "
                                     f"'{size[2]}', is {' × '.join(map(str, size[3]))})")
    if size is not None and have is not None and size[1] > have:
        raise ModelTooLargeError(f"{where}the model config asks for {asked}, more than this machine's memory "
                                 f"({_size_text(have)}): is a width or channel count in the config wrong?")
    try:
        if arch == "ensemble":
            from .ensemble import LogitEnsemble

            return LogitEnsemble(resolve_config(config), build_model, output_stride)
        if arch == "interactive-hrnet-ocr":
            return InteractiveKeypointModel(config)
        return InteractiveEncoderDecoder(config)
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower():
            raise
        raise ModelTooLargeError(f"{where}the memory for the model could not be allocated: the config asks for "
                                 f"{asked or 'more than is free'}; free memory or check its widths and channel "
                                 "counts") from None
