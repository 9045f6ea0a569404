import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_interactive_landmarks.codecs.geometry import to_network, to_original
from napari_interactive_landmarks.codecs.heatmaps import decode_strided_logits, gaussian_heatmaps, local_soft_argmax


def test_gaussian_encode_decode_round_trip_is_subpixel():
    rng = np.random.default_rng(0)
    coords = torch.tensor(rng.uniform([20, 20], [490, 235], size=(3, 10, 2)), dtype=torch.float32)
    maps = gaussian_heatmaps(coords, (512, 256), sigma=7.5)
    assert maps.shape == (3, 10, 512, 256)
    assert torch.allclose(maps.amax(dim=(-1, -2)), torch.ones(3, 10), atol=0.02)
    decoded = local_soft_argmax(maps)
    err = (decoded - coords).norm(dim=-1)
    assert err.max() < 0.1, err.max()


def test_gaussian_mask_and_nan_give_empty_channels():
    coords = torch.tensor([[[10.0, 10.0], [float("nan"), 3.0], [30.0, 20.0]]])
    maps = gaussian_heatmaps(coords, (64, 32), 2.0, mask=torch.tensor([[True, True, False]]))
    assert maps[0, 0].max() > 0.9
    assert maps[0, 1].max() == 0 and maps[0, 2].max() == 0


def test_strided_decoder_matches_full_resolution_decoding():
    torch.manual_seed(0)
    c = torch.rand(2, 19, 2) * torch.tensor([127.0, 103.0])
    g = gaussian_heatmaps(c, (128, 104), 1.5)
    logits = torch.logit(g.clamp(1e-4, 1 - 1e-4) * 0.9) + 0.05 * torch.randn_like(g)
    full = F.interpolate(logits, size=(512, 416), mode="bilinear", align_corners=False)
    want = local_soft_argmax(torch.sigmoid(full))
    got, peak = decode_strided_logits(logits, (512, 416))
    assert (want - got).abs().max() < 1e-3
    assert torch.allclose(peak, torch.sigmoid(full).amax(dim=(-1, -2)), atol=1e-5)


@pytest.mark.parametrize("orig,net", [((2375, 890), (512, 256)), ((2400, 1935), (512, 416)), ((100, 100), (512, 256))])
def test_network_coordinate_mapping_is_invertible_and_per_axis(orig, net):
    pts = np.array([[0.0, 0.0], [orig[0] - 1, orig[1] - 1], [orig[0] / 3, orig[1] / 7]])
    back = to_original(to_network(pts, orig, net), orig, net)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # pixel-centre convention: the image's outer edges map onto each other
    edge = to_network(np.array([[-0.5, -0.5], [orig[0] - 0.5, orig[1] - 0.5]]), orig, net)
    np.testing.assert_allclose(edge, [[-0.5, -0.5], [net[0] - 0.5, net[1] - 0.5]], atol=1e-9)


@pytest.mark.parametrize("name", ["phantom-spine", "aasce-spine", "isbi-ceph"])
def test_at_inference_the_network_draws_only_the_clicked_hint_channels_and_answers_exactly_as_with_all(name):
    """Issue 39: without gradients the network draws only the hint channels a click fills (6 of 136 after three
    clicks on the spine), and its hint fusion and gate skip the zeros of the others. The logits must be the numbers
    the full hint maps give (the training path, with gradients), at 0, 1 and 3 clicks, for each shipped architecture
    (HRNet; the FARNet/U-Net ensemble). Fails when a click's channel is dropped or mis-indexed (differences of whole
    units)."""
    from napari_interactive_landmarks.inference.predictor import Predictor

    p = Predictor.from_name(name, device="cpu")
    p.set_precision("fp32")
    rng = np.random.default_rng(4)
    h, w = (900, 400) if name != "isbi-ceph" else (1200, 1000)
    img = rng.normal(128, 40, size=(h, w)).clip(0, 255).astype(np.uint8)
    prepared = p.prepare(img)
    previous = rng.uniform(0.2, 0.8, size=(p.num_landmarks, 2)) * [h, w]
    for n in (0, 1, 3):
        idx = rng.choice(p.num_landmarks, n, replace=False)
        clicks = {int(i): (float(rng.uniform(0, h - 1)), float(rng.uniform(0, w - 1))) for i in idx}
        net_clicks, clicked, prev = p._interaction(clicks, previous, prepared.original_shape)
        kw = dict(clicks=net_clicks, clicked=clicked, previous=prev) if clicks else {}
        with torch.no_grad():
            fast = p.model(prepared.tensor, **kw)["logits"]
        with torch.enable_grad():
            full = p.model(prepared.tensor, **kw)["logits"].detach()
        # the same sum without its zero terms: bit-identical on the machines measured; a tolerance far below anything
        # the decoding sees, because a CPU's convolution kernels may group the non-zero terms differently
        torch.testing.assert_close(fast, full, rtol=0, atol=1e-3, msg=f"{name}, {n} clicks")


def test_the_drawn_hint_channels_are_the_nonzero_channels_of_the_full_hint_maps():
    from napari_interactive_landmarks.codecs.heatmaps import render_hint_channels, render_hints

    rng = np.random.default_rng(2)
    k = 7
    clicks = torch.tensor(rng.uniform(0, 60, size=(2, k, 2)), dtype=torch.float32)
    previous = torch.tensor(rng.uniform(0, 60, size=(2, k, 2)), dtype=torch.float32)
    clicked = torch.zeros(2, k, dtype=torch.bool)
    clicked[0, 1] = clicked[1, 4] = clicked[1, 5] = True
    clicks[1, 5] = float("nan")  # a clicked landmark without a finite click: not drawn
    full = render_hints(previous, clicks, clicked, (64, 48), 3.0)
    maps, channels = render_hint_channels(previous, clicks, clicked, (64, 48), 3.0)
    assert channels.tolist() == [1, 4, 5, 1 + k, 4 + k]  # previous of 1, 4, 5 (5's previous is finite); clicks 1, 4
    assert torch.equal(maps, full[:, channels])
    others = [c for c in range(2 * k) if c not in channels.tolist()]
    assert (full[:, others] == 0).all()
    maps, channels = render_hint_channels(previous, clicks, torch.zeros(2, k, dtype=torch.bool), (64, 48), 3.0)
    assert channels.tolist() == [0] and (maps == 0).all()  # nothing drawn: one zero channel stands for all
