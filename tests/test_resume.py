"""--resume continues exactly (also from inside an epoch) and refuses another run's checkpoint (issue 18, bad input)."""

import pytest
import torch

from tests.conftest import phantom_cached


def _cfg(out, **over):
    from napari_interactive_landmarks.data.phantom import phantom_schema_dict

    cfg = {"name": "resume-test", "schema": phantom_schema_dict(4), "input_size": [128, 64], "sigma": 3.0,
           "model": {"preset": "hrnet-tiny"}, "epochs": 2, "batch_size": 4, "lr": 3e-3, "val_every": 100,
           "val_clicks": [0], "morphology": {"pairs": 0, "triplets": 0, "weight": 0.0}, "fg_weight": 40.0,
           "out_dir": str(out), "seed": 3, "loss_stride": 1, "device": "cpu", "num_workers": 0,
           "checkpoint_every_min": 0}
    cfg.update(over)
    return cfg


def _trainer(cfg, data, load_init=True):
    from napari_interactive_landmarks.training.trainer import Trainer

    t = Trainer(cfg, load_init=load_init)
    t.load_data(*data)
    return t


@pytest.fixture(scope="module")
def data():
    return phantom_cached(16, 0), phantom_cached(4, 1)


def test_a_run_killed_inside_an_epoch_resumes_without_repeating_or_skipping_a_sample(tmp_path, data, monkeypatch):
    from napari_interactive_landmarks.training import trainer as trainer_mod

    seen_whole, seen_split = [], []
    real_getitem = trainer_mod.AugmentedSamples.__getitem__

    def recording(into):
        def getitem(self, item):
            into.append(item)
            return real_getitem(self, item)
        return getitem

    # the uninterrupted run: 2 epochs × 4 batches
    monkeypatch.setattr(trainer_mod.AugmentedSamples, "__getitem__", recording(seen_whole))
    whole = _trainer(_cfg(tmp_path / "whole"), data)
    whole.fit(progress=False)

    # the same run, checkpointing after every batch and killed after the 2nd batch of the 2nd epoch
    monkeypatch.setattr(trainer_mod.AugmentedSamples, "__getitem__", recording(seen_split))
    cfg = _cfg(tmp_path / "split", checkpoint_every_min=1e-9)
    first = _trainer(cfg, data)
    real_step, calls = first.train_step, []

    def dying_step(*a):
        if len(calls) == 4 + 2:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real_step(*a)

    first.train_step = dying_step
    with pytest.raises(KeyboardInterrupt):
        first.fit(progress=False)
    ckpt = torch.load(tmp_path / "split" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step_in_epoch"] == 2
    seen_split[:] = seen_split[: (4 + 2) * 4]  # the samples of the batches that were trained on
    again = _trainer(cfg, data, load_init=False)
    again.fit(resume=True, progress=False)
    assert seen_split == seen_whole  # every (sample, augmentation seed) once, in the same order
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("change, says", [({"lr": 1e-3}, "its lr is 0.003, this config's is 0.001"),
                                          ({"model": {"preset": "hrnet-tiny", "gating": "none"}}, "architecture"),
                                          ({"name": "other"}, "its name is 'resume-test'")])
def test_resume_of_another_runs_checkpoint_is_refused_in_one_line_and_overwrites_nothing(tmp_path, data, change,
                                                                                        says):
    from napari_interactive_landmarks.training.trainer import ResumeError

    out = tmp_path / "run"
    t = _trainer(_cfg(out, epochs=1), data)
    t.fit(progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = _trainer(_cfg(out, epochs=3, **change), data, load_init=False)
    with pytest.raises(ResumeError, match=says) as exc:
        other.fit(resume=True, progress=False)
    assert "\n" not in str(exc.value) and "nothing was overwritten" in str(exc.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_checkpoint_without_identity_is_refused(tmp_path, data):
    from napari_interactive_landmarks.training.trainer import ResumeError

    out = tmp_path / "old"
    t = _trainer(_cfg(out, epochs=1), data)
    t.fit(progress=False)
    st = torch.load(out / "last.ckpt", weights_only=True)
    del st["identity"]
    torch.save(st, out / "last.ckpt")
    with pytest.raises(ResumeError, match="older trainer"):
        _trainer(_cfg(out, epochs=2), data, load_init=False).fit(resume=True, progress=False)
