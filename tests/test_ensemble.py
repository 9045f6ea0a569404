"""Several trained models served as one (``arch: ensemble``, ``napari-landmarks ensemble``): the logits are the
weighted mean of the members', each member sees the film and the clicks at its own input size, and members that do
not belong together are refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_interactive_landmarks.codecs import geometry
from napari_interactive_landmarks.inference import Predictor
from napari_interactive_landmarks.models.ensemble import LogitEnsemble, assemble_ensemble
from napari_interactive_landmarks.weights import load_weights, resolve_weights, save_weights

PHANTOM = "phantom-spine"


def _phantom_file():
    return resolve_weights(PHANTOM)


def _perturbed_copy(path, out, seed=1, scale=0.05, **card_changes):
    """A second member: the phantom model with its float tensors perturbed (its card changed by ``card_changes``)."""
    state, meta = load_weights(path)
    g = torch.Generator().manual_seed(seed)
    state = {k: (v + scale * v.std().nan_to_num(0) * torch.randn(v.shape, generator=g)) if v.is_floating_point()
             and v.numel() > 1 and "running_var" not in k else v for k, v in state.items()}
    meta = {**meta, "name": out.stem}
    for k, v in card_changes.items():  # metadata: strings as they are, the rest JSON (as save_weights writes it)
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    save_weights(state, out, metadata=meta)
    return out


def _film(seed=0, shape=(300, 140)):
    from napari_interactive_landmarks.data.phantom import phantom_set

    ims, coords = phantom_set(1, seed, shape=shape, num_vertebrae=6)
    return ims[0], coords[0]


def test_an_ensemble_of_one_model_twice_predicts_exactly_what_the_model_does(tmp_path):
    src = _phantom_file()
    ens = tmp_path / "ens.safetensors"
    assemble_ensemble([src, src], ens, weights=[1.0, 3.0])
    single, double = Predictor.from_file(src), Predictor.from_file(ens)
    assert double.input_size == single.input_size and double.codec.grid == single.codec.grid
    image, truth = _film()
    first = single.predict(image)
    clicks = {5: tuple(truth[5]), 11: tuple(truth[11])}
    for kw in ({}, {"clicks": clicks, "previous": first.coords}):
        a, b = single.predict(image, **kw), double.predict(image, **kw)
        torch.testing.assert_close(b.logits, a.logits, atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(b.coords, a.coords, atol=1e-3)


def test_the_ensemble_logits_are_the_weighted_mean_of_its_members(tmp_path):
    src = _phantom_file()
    other = _perturbed_copy(src, tmp_path / "other.safetensors")
    ens = tmp_path / "ens.safetensors"
    assemble_ensemble([src, other], ens, weights=[1.0, 3.0])
    pa, pb, pe = (Predictor.from_file(f) for f in (src, other, ens))
    image, truth = _film(seed=2)
    clicks = {3: tuple(truth[3])}
    prev = pa.predict(image).coords
    la, lb, le = (p.predict(image, clicks=clicks, previous=prev).logits for p in (pa, pb, pe))
    assert not torch.allclose(la, lb, atol=1e-2)  # the two members really differ
    torch.testing.assert_close(le, 0.25 * la + 0.75 * lb, atol=2e-4, rtol=1e-4)


def test_a_member_at_another_input_size_sees_the_film_and_the_clicks_at_its_own_size(tmp_path, monkeypatch):
    """The ensemble runs at twice the member's size: the member must get the film resized to its own size and the
    clicks / previous points at the same place on the film in its own pixels (not the ensemble's)."""
    src = _phantom_file()
    ens = tmp_path / "ens.safetensors"
    member_size = Predictor.from_file(src).input_size
    big = (member_size[0] * 2, member_size[1] * 2)
    assemble_ensemble([src, src], ens, input_size=big)
    alone, pe = Predictor.from_file(src), Predictor.from_file(ens)
    assert pe.input_size == big and pe.sigma == pytest.approx(alone.sigma * 2)
    image, truth = _film(seed=3)
    prev = alone.predict(image).coords
    clicks = {7: tuple(truth[7] + 4.0)}
    seen = []
    member = pe.model.members[0]
    real_forward = member.forward

    def spy(x, hints=None, *, clicks=None, clicked=None, previous=None):
        seen.append((x.shape[-2:], clicks, previous))
        return real_forward(x, hints, clicks=clicks, clicked=clicked, previous=previous)

    monkeypatch.setattr(member, "forward", spy)
    out = pe.predict(image, clicks=clicks, previous=prev)
    size, got_clicks, got_prev = seen[0]
    assert tuple(size) == member_size
    want_clicks, _, want_prev = alone._interaction(clicks, prev, image.shape)
    torch.testing.assert_close(got_clicks[:, 7], want_clicks[:, 7], atol=1e-4, rtol=0)
    torch.testing.assert_close(got_prev, want_prev, atol=1e-4, rtol=0)
    assert torch.isnan(got_clicks[:, 0]).all()  # unclicked stays unclicked
    # the same network on the same film: the points agree to a fraction of the member's map cell
    cell = image.shape[0] / member_size[0] * 4
    ref = alone.predict(image, clicks=clicks, previous=prev)
    unclicked = ~ref.clicked
    assert np.median(np.linalg.norm(out.coords - ref.coords, axis=1)[unclicked]) < 0.25 * cell


def test_rescaled_network_pixels_name_the_same_point_of_the_film():
    orig, shape = np.array([[10.0, 20.0], [199.5, 0.0]]), (400, 200)
    a, b = (256, 128), (384, 192)
    in_a = geometry.to_network(orig, shape, a)
    scale = torch.tensor([b[0] / a[0], b[1] / a[1]], dtype=torch.float64)
    got = LogitEnsemble._rescale(torch.from_numpy(in_a), scale).numpy()
    np.testing.assert_allclose(got, geometry.to_network(orig, shape, b), atol=1e-9)


def test_members_that_do_not_belong_together_are_refused_in_one_line(tmp_path):
    src = _phantom_file()
    ens = tmp_path / "ens.safetensors"
    with pytest.raises(ValueError, match="at least two"):
        assemble_ensemble([src], ens)
    with pytest.raises(ValueError, match="one positive weight per member"):
        assemble_ensemble([src, src], ens, weights=[1.0, 0.0])
    other_set = _perturbed_copy(src, tmp_path / "sigmoid.safetensors", heatmap="softmax",
                                config={**Predictor.from_file(src).card.config, "heatmap": "softmax"})
    with pytest.raises(ValueError, match="decodes 'softmax' logits"):
        assemble_ensemble([src, other_set], ens)
    assemble_ensemble([src, src], ens)
    with pytest.raises(ValueError, match="itself an ensemble"):
        assemble_ensemble([src, ens], tmp_path / "nested.safetensors")
    assert not (tmp_path / "nested.safetensors").exists()


def test_the_trainer_refuses_to_train_an_ensemble(tmp_path):
    from napari_interactive_landmarks.data.phantom import phantom_schema_dict
    from napari_interactive_landmarks.training.trainer import Trainer

    with pytest.raises(ValueError, match="assembled from trained models"):
        Trainer({"schema": phantom_schema_dict(4), "input_size": [128, 64], "sigma": 3.0, "device": "cpu",
                 "model": {"arch": "ensemble", "members": []}, "out_dir": str(tmp_path)})


def test_the_cli_writes_an_ensemble_and_never_over_a_member(tmp_path):
    src = _phantom_file()
    copy = tmp_path / "member.safetensors"
    copy.write_bytes(src.read_bytes())
    run = lambda *a: subprocess.run([sys.executable, "-m", "napari_interactive_landmarks.cli", "ensemble", *a],  # noqa: E731
                                    capture_output=True, text=True)
    before = copy.read_bytes()
    r = run(str(copy), str(src), "--out", str(copy), "--overwrite")
    assert r.returncode != 0 and "is one of the members" in r.stderr and copy.read_bytes() == before
    out = tmp_path / "ens.safetensors"
    r = run(str(copy), str(src), "--out", str(out), "--name", "phantom-pair")
    assert r.returncode == 0, r.stderr
    assert "ensemble 'phantom-pair' of 2 models" in r.stdout and "calibrate" in r.stdout
    p = Predictor.from_file(out)
    assert p.name == "phantom-pair" and len(p.model.members) == 2


def test_a_card_naming_after_click_members_is_checked():
    from napari_interactive_landmarks.model_card import ModelCardError, check_interaction

    assert check_interaction({"hold": 2, "after_click_members": [0]}, "m")["after_click_members"] == [0]
    for bad in ([], [-1], ["0"], 0, [True]):
        with pytest.raises(ModelCardError, match="after_click_members"):
            check_interaction({"hold": 2, "after_click_members": bad}, "m")
