"""Issue 12: FARNet (Ao & Wu 2022) and the Contour-Hugging Heatmaps U-Net (McCouat & Voiculescu 2022) as models of
the package — encoders, output shapes and strides, the EWC and one-hot softmax-NLL losses, a tiny training run
per architecture, the interactive switch, and bad configs refused in one line before training."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_interactive_landmarks import losses
from napari_interactive_landmarks.codecs.codec import LandmarkCodec
from napari_interactive_landmarks.codecs.heatmaps import gaussian_heatmaps, local_soft_argmax
from napari_interactive_landmarks.models.interactive import (build_model, check_input_size, output_stride,
                                                             resolve_config)

from .conftest import phantom_cached

REPO = Path(__file__).resolve().parents[1]
TINY = {"farnet": "farnet-tiny", "chh-unet": "chh-tiny"}


def _model(arch, hint_fusion=True, gating="max", k=5, **kw):
    torch.manual_seed(0)
    cfg = {"arch": arch, "preset": TINY[arch], "num_landmarks": k, "hint_fusion": hint_fusion, "gating": gating,
           "hint_sigma": 3.0, **kw}
    return build_model(cfg).eval()


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- encoders, each on its own


def test_densenet121_gives_c1_to_c5_at_strides_2_to_32_with_densenet121s_widths_and_size():
    from napari_interactive_landmarks.models.densenet import DenseNet

    torch.manual_seed(0)
    enc = DenseNet(in_channels=3).eval()  # DenseNet-121 (torchvision's densenet121().features: 6,953,856)
    assert _nparams(enc) == 6_953_856
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 96, 160))
    assert [f.shape[1] for f in feats] == enc.channels == [64, 256, 512, 1024, 1024]
    assert [tuple(f.shape[-2:]) for f in feats] == [(96 // s, 160 // s) for s in (2, 4, 8, 16, 32)]
    hint = torch.ones(1, 64, 48, 80)
    with torch.no_grad():
        assert not torch.allclose(enc(torch.zeros(1, 3, 96, 160), hint)[4], enc(torch.zeros(1, 3, 96, 160))[4])


def test_resnet34_gives_five_maps_at_strides_2_to_32_with_resnet34s_widths_and_size():
    from napari_interactive_landmarks.models.resnet import ResNet

    enc = ResNet(in_channels=3).eval()  # ResNet-34 without its classifier (torchvision: 21,797,672 − 513,000)
    assert _nparams(enc) == 21_284_672
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 160, 96))
    assert [f.shape[1] for f in feats] == enc.channels == [64, 64, 128, 256, 512]
    assert [tuple(f.shape[-2:]) for f in feats] == [(160 // s, 96 // s) for s in (2, 4, 8, 16, 32)]


def test_published_widths_parameter_counts():
    """The full networks as published (no interaction): FARNet with the reference MSFA widths, the U-Net with
    the paper's 256/128/64/32/32 decoder; the interaction adds only the hint fusion and the gate."""
    far = build_model({"arch": "farnet", "num_landmarks": 19, "hint_fusion": False, "gating": "none"})
    assert resolve_config({"arch": "farnet", "num_landmarks": 19})["preset"] == "farnet"
    assert 60e6 < _nparams(far) < 62e6 and _nparams(far.net.encoder) == 6_953_856 - 6272  # one input channel
    unet = build_model({"arch": "chh-unet", "num_landmarks": 19, "hint_fusion": False, "gating": "none"})
    assert 24e6 < _nparams(unet) < 25e6
    assert [b.convs[1][0].out_channels for b in unet.net.blocks] == [256, 128, 64, 32, 32]
    assert _nparams(unet) == _nparams(unet.net)  # the published network: nothing added
    compact = build_model({"arch": "farnet", "preset": "farnet-compact", "num_landmarks": 19})
    half = build_model({"arch": "chh-unet", "preset": "chh-resnet34-half", "num_landmarks": 19})
    for m in (compact, half):  # the fp16 weights file (BN statistics included) inside a GPU collect's 16 MiB
        nbytes = sum(v.numel() * (2 if v.is_floating_point() else v.element_size()) for v in m.state_dict().values())
        assert nbytes < 15.5 * 2**20


# ---------------------------------------------------------------- output shapes and strides


@pytest.mark.parametrize("arch", ["farnet", "chh-unet"])
@pytest.mark.parametrize("size", [(96, 160), (160, 32), (224, 96)])
def test_full_resolution_logits_for_sizes_with_odd_multiples_of_32(arch, size):
    m = _model(arch)
    assert m.output_stride == output_stride(m.config) == 1
    h, w = size
    with torch.no_grad():
        out = m(torch.randn(2, 1, h, w))
    assert out["logits"].shape == (2, 5, h, w)
    if arch == "farnet":  # the coarse output of the coarse-to-fine supervision
        assert m.aux_stride == 2 and out["aux"].shape == (2, 5, h // 2, w // 2)
    else:
        assert m.aux_stride is None and out["aux"] is None
    assert LandmarkCodec(size, 3.0, stride=m.output_stride).grid == (h, w)


@pytest.mark.parametrize("arch", ["farnet", "chh-unet"])
def test_weights_for_another_landmark_set_are_named_as_such(tmp_path, arch):
    """The loader names a landmark-count mismatch through the classifier each model declares."""
    from napari_interactive_landmarks.inference.predictor import PredictionError, _load_state
    from napari_interactive_landmarks.schemas import load_schema

    m, other = _model(arch, k=19), _model(arch, k=5)
    assert m.state_dict()[m.classifier_weight].shape[0] == 19
    with pytest.raises(PredictionError, match="holds a model for 5 landmarks.*different landmark set"):
        _load_state(m, other.state_dict(), tmp_path / "other.safetensors", load_schema("isbi-ceph19"))


def test_hrnet_keeps_stride_4_and_the_codec_checks_the_grid():
    m = build_model({"preset": "hrnet-tiny", "num_landmarks": 3}).eval()
    assert m.output_stride == output_stride({}) == 4
    with torch.no_grad():
        logits = m(torch.randn(1, 1, 100, 60))["logits"]
    codec = LandmarkCodec((100, 60), 3.0)
    assert tuple(logits.shape[-2:]) == codec.grid == (25, 15)
    codec.decode(logits)
    with pytest.raises(ValueError, match="stride-1 grid"):
        LandmarkCodec((100, 60), 3.0, stride=1).decode(logits)


# ---------------------------------------------------------------- bad configs: one line, before training


def test_unknown_architecture_and_unfit_input_size_are_one_clear_line():
    with pytest.raises(ValueError, match="unknown architecture 'unet3d'.*known: interactive-hrnet-ocr, farnet"):
        resolve_config({"arch": "unet3d", "num_landmarks": 3})
    with pytest.raises(ValueError, match="preset 'hrnet-tiny' for architecture 'farnet'"):
        resolve_config({"arch": "farnet", "preset": "hrnet-tiny", "num_landmarks": 3})
    with pytest.raises(ValueError, match=r"multiples of 32 .* e\.g\. \[800, 640\]") as err:
        check_input_size({"arch": "farnet"}, (800, 650))
    assert "\n" not in str(err.value)
    check_input_size({"arch": "chh-unet"}, (800, 640))
    check_input_size({}, (100, 60))  # HRNet takes any size


@pytest.mark.parametrize("model, size, message", [
    ({"arch": "chh-unett"}, [96, 64], "unknown architecture 'chh-unett'"),
    ({"arch": "farnet", "preset": "farnet-tiny"}, [100, 64], "multiples of 32"),
])
def test_cli_train_refuses_a_bad_config_in_one_line_before_reading_data(tmp_path, model, size, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"name": "bad", "dataset": "isbi2015", "schema": "isbi-ceph19", "input_size": size,
                                   "model": model, "root": str(tmp_path / "no-such-dataset")}))
    r = subprocess.run([sys.executable, "-m", "napari_interactive_landmarks.cli", "train", "--config", str(cfg),
                        "--out-dir", str(tmp_path / "run"), "--device", "cpu"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "no-such-dataset" not in lines[0], r.stderr
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_shipped_configs_for_the_published_systems_resolve():
    from napari_interactive_landmarks.training.trainer import load_config

    for name, arch, loss, size, k in [("farnet-isbi", "farnet", "ewc", [800, 640], 19),
                                      ("chh-isbi", "chh-unet", "softmax_nll", [800, 640], 19),
                                      ("farnet-aasce", "farnet", "ewc", [1024, 512], 68)]:
        paths = [REPO / "configs" / f"{name}.yaml", *sorted((REPO / "experiments" / "configs" / "gpu").glob(f"{name}*.yaml"))]
        assert len(paths) >= 2, f"no GPU variant of {name}"
        for path in paths:
            cfg = load_config(path)
            assert cfg["model"]["arch"] == arch and cfg["heatmap_loss"] == loss and cfg["input_size"] == size, path
            check_input_size(resolve_config({**cfg["model"], "num_landmarks": k}), cfg["input_size"])
        published = load_config(REPO / "configs" / f"{name}.yaml")["model"]
        assert published["hint_fusion"] is False and published["gating"] == "none"


def test_cpu_experiment_differs_from_the_shipped_recipe_only_in_the_network_and_its_loss():
    """The equal-budget CPU comparison (CHH U-Net half vs the shipped HRNet): the same data, clicks, schedule and
    epochs (24 + 8); only the network and its loss (the CHH paper's softmax NLL) differ."""
    from napari_interactive_landmarks.training.trainer import load_config

    ours = load_config(REPO / "experiments" / "configs" / "experiments" / "chh-half-isbi-cpu.yaml")
    shipped = load_config(REPO / "configs" / "isbi-ceph.yaml")
    stage2 = load_config(REPO / "experiments" / "configs" / "experiments" / "isbi-ceph-ft-nll.yaml")
    differ = {key for key in ours if ours[key] != shipped[key]}
    assert differ == {"name", "model", "heatmap_loss", "epochs"}, differ
    assert ours["epochs"] == shipped["epochs"] + stage2["epochs"]
    assert ours["heatmap_loss"] == stage2["heatmap_loss"] == "softmax_nll" and ours["nll_sigma"] == stage2["nll_sigma"]
    assert ours["model"]["arch"] == "chh-unet" and {**ours["model"], "arch": None, "preset": None} == {
        **shipped["model"], "arch": None, "preset": None}


def test_hrnet_softmax_nll_arm_differs_from_the_unet_arm_only_in_the_network():
    """The HRNet arm of the same comparison (softmax NLL from the start): against the U-Net arm only the
    network differs, so the two isolate the architecture at an equal budget and loss."""
    from napari_interactive_landmarks.training.trainer import load_config

    hrnet = load_config(REPO / "models" / "isbi-ceph" / "1-member-512.yaml")
    unet = load_config(REPO / "experiments" / "configs" / "experiments" / "chh-half-isbi-cpu.yaml")
    shipped = load_config(REPO / "configs" / "isbi-ceph.yaml")
    assert set(hrnet) == set(unet)
    assert {key for key in hrnet if hrnet[key] != unet[key]} == {"name", "model"}
    assert hrnet["model"] == shipped["model"] and not hrnet.get("init_weights")


# ---------------------------------------------------------------- losses on constructed maps


def _gauss_logits(center, size=(33, 33), sigma=2.0, eps=1e-3):
    t = gaussian_heatmaps(torch.tensor([[center]], dtype=torch.float32), size, sigma).clamp(eps, 1 - eps)
    return torch.log(t / (1 - t))


def test_ewc_is_alpha_to_the_y_weighted_squared_error_shared_with_the_bce_weighting():
    y = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(losses.exponential_weight(y, 40.0), torch.tensor([1.0, math.sqrt(40.0), 40.0]))
    z = torch.tensor([0.3, -1.0, 2.0])
    want = ((torch.sigmoid(z) - y) ** 2 * torch.tensor([1.0, math.sqrt(40.0), 40.0])).mean()
    assert torch.allclose(losses.heatmap_ewc(z, y, 40.0), want)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, weight=losses.exponential_weight(y, 40.0))
    assert torch.allclose(losses.heatmap_bce(z, y, 40.0), bce)


@pytest.mark.parametrize("loss", ["ewc", "onehot_nll"])
def test_a_perfect_prediction_has_the_lowest_loss_and_the_gradient_moves_the_peak_to_the_target(loss):
    target_rc = (16.0, 16.0)
    coords = torch.tensor([[target_rc]])
    y = gaussian_heatmaps(coords, (33, 33), 2.0)

    def f(logits):
        if loss == "ewc":
            return losses.heatmap_ewc(logits, y, 40.0)
        return losses.heatmap_softmax_nll(logits, coords, 0.0)

    def perfect():
        if loss == "ewc":
            return _gauss_logits(target_rc)
        z = torch.full((1, 1, 33, 33), -10.0)
        z[0, 0, 16, 16] = 10.0
        return z

    best = f(perfect())
    for shift in [(0, 1), (1, 0), (2, 2), (0, -4), (6, 0)]:
        assert f(_gauss_logits((16.0 + shift[0], 16.0 + shift[1]), sigma=2.0)) > best
    # gradient descent from a prediction 4 px off: the peak moves towards the target
    z = _gauss_logits((16.0, 20.0), sigma=2.0, eps=0.05).requires_grad_(True)
    opt = torch.optim.SGD([z], lr=100.0 if loss == "ewc" else 2.0)  # EWC: a mean over 33² pixels
    start = local_soft_argmax(torch.sigmoid(z.detach()), window=9)[0, 0]
    for _ in range(30):
        opt.zero_grad()
        f(z).backward()
        opt.step()
    end = local_soft_argmax(torch.sigmoid(z.detach()), window=9)[0, 0]
    assert abs(end[1] - 16.0) < abs(start[1] - 16.0) - 1.0 and abs(end[0] - 16.0) < 0.5


def test_one_hot_nll_is_the_sigma_to_zero_limit_of_the_gaussian_nll():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 20, 24)
    coords = torch.tensor([[[3.2, 4.7], [10.0, 23.0], [float("nan"), 1.0]],
                           [[19.4, 0.2], [-3.0, 5.0], [7.6, 12.4]]])  # NaN and off-grid landmarks do not count
    one_hot = losses.heatmap_softmax_nll(logits, coords, 0.0)
    lsm = torch.log_softmax(logits.flatten(-2), -1)
    picks = [(0, 0, 3, 5), (0, 1, 10, 23), (1, 0, 19, 0), (1, 2, 8, 12)]
    want = -torch.stack([lsm[b, k, r * 24 + c] for b, k, r, c in picks]).mean()
    assert torch.allclose(one_hot, want)
    on_pixels = torch.round(coords)  # a narrow Gaussian on a pixel centre is (numerically) that pixel's one-hot
    assert torch.allclose(losses.heatmap_softmax_nll(logits, on_pixels, 0.1), one_hot, atol=1e-5)
    assert not torch.allclose(losses.heatmap_softmax_nll(logits, on_pixels, 1.0), one_hot, atol=1e-2)


@pytest.mark.parametrize("stride", [1, 2])
def test_targets_decode_to_their_own_coordinates_without_a_one_pixel_bias(stride):
    """FARNet's code draws targets on a 1-indexed grid and decodes 0-indexed; ours meet exactly."""
    size = (64, 96)
    codec = LandmarkCodec(size, 6.0, stride=stride)
    coords = torch.tensor([[[20.0, 30.0], [41.5, 70.25], [10.3, 5.8]]])
    t = codec.targets(coords, stride).clamp(1e-4, 1 - 1e-4)
    got, _ = codec.decode(torch.log(t / (1 - t)))
    assert torch.allclose(got, coords, atol=0.05)


# ---------------------------------------------------------------- training and inference, tiny


@pytest.mark.parametrize("arch, loss, clicks", [("farnet", "ewc", 12), ("chh-unet", "softmax_nll", 0)])
def test_tiny_training_run_loss_falls_and_the_predictor_serves_it(tmp_path, arch, loss, clicks):
    """(max_initial_clicks 0: no simulated clicks, as the published-network configs train.)"""
    from napari_interactive_landmarks.data.phantom import phantom_schema_dict
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.training.trainer import Trainer

    tr, va = phantom_cached(32, 0), phantom_cached(4, 1)
    t = Trainer({"schema": phantom_schema_dict(4), "input_size": [128, 64], "sigma": 3.0, "aux_sigma": 6.0,
                 "model": {"arch": arch, "preset": TINY[arch]}, "batch_size": 8, "lr": 3e-3, "val_clicks": [0],
                 "morphology": {"pairs": 4, "triplets": 4, "weight": 0.01}, "fg_weight": 40.0, "heatmap_loss": loss,
                 "nll_sigma": 0.0, "out_dir": str(tmp_path), "seed": 0, "loss_stride": 1, "device": "cpu",
                 "max_initial_clicks": clicks, "max_iterative_rounds": 1 if clicks else 0})
    t.load_data(tr, va)
    assert t.codec.stride == 1
    epochs = []
    for e in range(6):
        order = np.random.default_rng(e).permutation(len(tr))
        epochs.append(np.mean([t.train_step(*t._batch(idx))["loss"] for idx in np.array_split(order, 4)]))
    assert epochs[-1] < 0.8 * epochs[0], epochs
    t.export_best({"val_mre@0_px": round(t.validate()[0], 3)})
    p = Predictor.from_file(tmp_path / "best.safetensors", device="cpu")
    assert p.codec.stride == 1 and p.model.config["arch"] == arch
    image = va.images[0].astype(np.float32)
    first = p.predict(image)
    pred = p.predict(image, clicks={3: (60.0, 30.0)}, previous=first.coords)
    assert pred.logits.shape == (16, 128, 64) and np.isfinite(pred.coords).all()
    assert tuple(pred.coords[3]) == (60.0, 30.0) and np.isfinite(pred.ere).all()


# ---------------------------------------------------------------- the interactive switch


@pytest.mark.parametrize("arch", ["farnet", "chh-unet"])
def test_a_click_changes_the_output_only_when_the_interaction_is_on(arch):
    torch.manual_seed(1)
    image = torch.randn(1, 1, 64, 96)
    clicks = torch.full((1, 5, 2), float("nan"))
    clicks[0, 2] = torch.tensor([30.0, 40.0])
    previous = torch.rand(1, 5, 2) * 60
    none = torch.zeros(1, 5, dtype=torch.bool)
    for hint_fusion, gating, changes in [(True, "max", True), (True, "none", True), (False, "max", True),
                                         (False, "none", False)]:
        m = _model(arch, hint_fusion, gating)
        with torch.no_grad():
            bare = m(image)["logits"]
            unclicked = m(image, clicks=clicks, clicked=none, previous=previous)["logits"]
            clicked = m(image, clicks=clicks, previous=previous)["logits"]
        assert torch.allclose(bare, unclicked, atol=1e-6)  # no click: the same as no interaction at all
        assert (not torch.allclose(bare, clicked, atol=1e-6)) == changes, (hint_fusion, gating)
    published = _model(arch, False, "none")
    assert published.hint_fusion is None and published.gate is None
    assert _nparams(published) == _nparams(published.net)
