"""Training infrastructure: device-safe code, self-describing weights, training packs, DDP, hint maps, the
others-delta / harm-rate metrics."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from .device_guard import DeviceGuard
from napari_interactive_landmarks.cli import main

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- device mix-ups


class FixedRounds:
    """A click RNG that always draws ``rounds`` iterative rounds (the crash was in the rounds' click update)."""

    def __init__(self, rounds, max_rounds):
        self.rounds, self.max_rounds, self.g = rounds, max_rounds, np.random.default_rng(0)

    def integers(self, low, high=None, size=None):
        return self.rounds if (high == self.max_rounds + 1 and size is None) else self.g.integers(low, high, size)

    def __getattr__(self, name):
        return getattr(self.g, name)


def test_training_validation_and_inference_create_no_tensor_without_a_device(tiny_run, tmp_path):
    """On CUDA, ``torch.arange(b)`` made on the CPU and used to index GPU tensors crashed the first iterative
    click round. On a CPU-only machine the same mistake is invisible, so this test records every tensor the
    package creates without naming its device, along the paths of train, validate, predict, evaluate and
    calibrate."""
    from napari_interactive_landmarks.data.phantom import make_phantom
    from napari_interactive_landmarks.evaluation import calibration as cal
    from napari_interactive_landmarks.evaluation.protocol import run_click_protocol
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.schemas import load_schema
    from napari_interactive_landmarks.training.trainer import Trainer

    trainer, _, _ = tiny_run
    t = Trainer({**trainer.cfg, "out_dir": str(tmp_path / "run"), "epochs": 1, "max_iterative_rounds": 2})
    t.load_data(trainer.train_set, trainer.val_set)
    t.click_rng = FixedRounds(2, 2)
    p = Predictor(t.model, load_schema(t.cfg["schema"]), t.size, float(t.cfg["sigma"]), name="tiny", device="cpu")
    img, gt = make_phantom(np.random.default_rng(3), shape=(256, 128), num_vertebrae=4)

    class Sample:
        name, coords, spacing = "s", gt, None

        @staticmethod
        def load_image():
            return img

    guard = DeviceGuard()
    with guard:
        t.train_step(*t._batch(np.arange(4)))
        t.validate(clicks=[0, 2])
        first = p.predict(img)
        p.predict(img, clicks={3: tuple(gt[3])}, previous=first.coords)
        run_click_protocol(p, Sample, max_clicks=2)
        cal.fit(cal.collect(p, [Sample], progress=False))
    assert not guard.violations, "\n".join(sorted(set(guard.violations)))


def test_the_device_guard_catches_the_original_mistake():
    guard = DeviceGuard()
    code = compile("torch.arange(3)", str(Path(__import__("napari_interactive_landmarks").__file__).parent / "x.py"),
                   "eval")
    with guard:
        eval(code, {"torch": torch})
        torch.arange(3)  # test code itself is not checked
    assert len(guard.violations) == 1 and "arange" in guard.violations[0]


def test_a_cuda_request_without_cuda_is_one_line_and_writes_nothing(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "dataset": "phantom", "schema": "phantom-spine24",
                                   "input_size": [64, 32], "model": {"preset": "hrnet-tiny"}}))
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--device", "cuda", "--out-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cuda" in err[0] and "not available" in err[0]
    assert not out.exists()


# --------------------------------------------------------------------------- hint maps


def test_training_and_inference_draw_the_same_click_maps(tiny_run):
    """The maps the model sees at training time (network pixels, batched) equal the predictor's (original
    pixels, a dict of clicks) for the same clicks and previous prediction."""
    from napari_interactive_landmarks.codecs.geometry import to_network
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.schemas import load_schema

    trainer, _, _ = tiny_run
    shape, size, sigma = (1000, 517), trainer.size, float(trainer.cfg["sigma"])
    p = Predictor(trainer.model, load_schema(trainer.cfg["schema"]), size, sigma, device="cpu")
    rng = np.random.default_rng(0)
    k = p.num_landmarks
    previous = rng.uniform([0, 0], shape, size=(k, 2))
    previous[5] = np.nan  # a landmark the previous prediction lost
    clicks = {2: (400.0, 200.5), 5: (10.0, 500.0), 11: (999.4, 0.0)}
    served = p._hints(clicks, previous, shape)

    click_net = np.full((1, k, 2), np.nan)
    clicked = np.zeros((1, k), bool)
    for i, pos in clicks.items():
        click_net[0, i] = to_network(np.array([pos]), shape, size)[0]
        clicked[0, i] = True
    trained = trainer.codec.hints(torch.tensor(to_network(previous, shape, size)[None], dtype=torch.float32),
                                  torch.tensor(click_net, dtype=torch.float32), torch.tensor(clicked))
    assert served.shape == trained.shape == (1, 2 * k, (size[0] + 1) // 2, (size[1] + 1) // 2)
    torch.testing.assert_close(served, trained, rtol=0, atol=1e-6)
    on = served[0].flatten(1).amax(1) > 0
    assert set(np.flatnonzero(on.numpy())) == {2, 11, k + 2, k + 5, k + 11}  # lost previous of 5: no map


def test_the_click_maps_are_gaussians_at_the_clicks_drawn_by_hand():
    """Issue 22: the test above compares the codec's hint maps with themselves (training and inference share
    ``render_hints``); here they are drawn independently in numpy from original-pixel clicks: channel k holds
    the previous position of clicked landmark k, channel K + k its click, each exp(-d² / 2(σ/2)²) on the
    stride-2 grid with pixel centres mapped as (x + 0.5) · scale - 0.5."""
    from napari_interactive_landmarks.inference import Predictor

    p = Predictor.from_name("phantom-spine", device="cpu")
    k, (H, W), sigma = p.num_landmarks, p.input_size, p.sigma
    shape = (1000, 517)
    previous = np.random.default_rng(1).uniform([0, 0], shape, size=(k, 2))
    clicks = {3: (400.0, 200.5), 17: (999.4, 0.0)}
    served = p._hints(clicks, previous, shape)[0].numpy()
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    assert served.shape == (2 * k, h2, w2)
    rows, cols = np.mgrid[0:h2, 0:w2]
    want = np.zeros_like(served)
    for i, pos in clicks.items():
        for ch, (r, c) in ((i, previous[i]), (k + i, pos)):
            gr = ((r + 0.5) * H / shape[0] - 0.5 + 0.5) / 2 - 0.5  # original -> network -> stride-2 grid
            gc = ((c + 0.5) * W / shape[1] - 0.5 + 0.5) / 2 - 0.5
            want[ch] = np.exp(-((rows - gr) ** 2 + (cols - gc) ** 2) / (2 * (sigma / 2) ** 2))
    np.testing.assert_allclose(served, want, atol=1e-5)


# --------------------------------------------------------------------------- self-describing weights


def test_a_runs_best_weights_carry_the_whole_model_card(tiny_run):
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.model_card import FORMAT, ModelCard
    from napari_interactive_landmarks.weights import load_weights

    trainer, out, _ = tiny_run
    _, meta = load_weights(out / "best.safetensors")
    assert meta["format"] == FORMAT
    card = ModelCard.from_metadata(meta)
    assert card.input_size == (128, 64) and card.sigma == 3.0 and card.heatmap == "sigmoid"
    assert card.training["best_epoch"] >= 1 and card.metrics and card.morphology["pairs"]
    p = Predictor.from_file(out / "best.safetensors")
    assert p.input_size == (128, 64) and p.num_landmarks == trainer.k and p.card.training == card.training


@pytest.mark.parametrize("field", ["input_size", "schema", "sigma", "config", "heatmap"])
def test_a_weights_file_missing_a_card_field_is_refused_naming_it(tiny_run, tmp_path, field):
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.model_card import ModelCardError
    from napari_interactive_landmarks.weights import load_weights, save_weights

    _, out, _ = tiny_run
    state, meta = load_weights(out / "best.safetensors")
    meta.pop(field)
    path = save_weights(state, tmp_path / "partial.safetensors", metadata=meta)
    with pytest.raises(ModelCardError, match=repr(field)):
        Predictor.from_file(path)


def test_every_command_takes_a_runs_best_weights_directly(tiny_run, tmp_path, capsys):
    """train → best.safetensors → --weights in predict, evaluate, bench and calibrate (which stores its
    temperatures in that file)."""
    from skimage.io import imsave

    from napari_interactive_landmarks.data.phantom import make_phantom
    from napari_interactive_landmarks.inference import Predictor

    _, out, _ = tiny_run
    weights = tmp_path / "best.safetensors"
    weights.write_bytes((out / "best.safetensors").read_bytes())
    img, _ = make_phantom(np.random.default_rng(1), shape=(256, 128), num_vertebrae=4)
    imsave(tmp_path / "film.png", (img * 255).astype(np.uint8), check_contrast=False)
    w = ["--weights", str(weights), "--device", "cpu"]
    assert main(["predict", str(tmp_path / "film.png"), "--out", str(tmp_path / "pred"), *w]) == 0
    pts = json.loads(next((tmp_path / "pred").glob("*.json")).read_text())
    assert len(pts["points"]) == 16 and all(np.isfinite(q["row"]) for q in pts["points"])
    assert main(["bench", "--runs", "3", "--size", "256", "128", *w]) == 0
    assert main(["evaluate", "--dataset", "phantom", "--split", "calib", "--limit", "2", "--clicks", "1",
                 "--no-progress", "--json", str(tmp_path / "e.json"), *w]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["num_images"] == 2
    assert Predictor.from_file(weights).temperatures is None
    assert main(["calibrate", "--dataset", "phantom", "--split", "calib", "--limit", "4", "--no-progress", *w]) == 0
    assert Predictor.from_file(weights).temperatures.shape == (16,)
    capsys.readouterr()


# --------------------------------------------------------------------------- training packs


@pytest.fixture(scope="module")
def generic_training_data(tmp_path_factory):
    """A user's own dataset in the generic format with a committed-style split file, and a config for it."""
    from skimage.io import imsave

    from napari_interactive_landmarks.data.phantom import make_phantom, phantom_schema_dict

    root = tmp_path_factory.mktemp("generic_train")
    schema = phantom_schema_dict(4)
    (root / "schema.yaml").write_text(yaml.safe_dump(schema))
    rng = np.random.default_rng(11)
    names = []
    with (root / "landmarks.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "row", "col"])
        for i in range(10):
            shape = (int(rng.integers(240, 300)), int(rng.integers(110, 140)))
            img, pts = make_phantom(rng, shape=shape, num_vertebrae=4)
            name = f"img{i}.png"
            imsave(root / name, (img * 255).astype(np.uint8), check_contrast=False)
            names.append(name)
            for n, (r, c) in zip(schema["landmarks"], pts):
                w.writerow([name, n, f"{r:.2f}", f"{c:.2f}"])
    split = {"seed": 0, "train": [f"img{i}.png" for i in range(7)], "val": [f"img{i}.png" for i in range(7, 10)]}
    (root / "split.json").write_text(json.dumps(split))
    cfg = {"name": "generic-tiny", "dataset": "generic", "root": str(root), "data_split": ".",
           "split_file": str(root / "split.json"), "schema": str(root / "schema.yaml"), "input_size": [128, 64],
           "sigma": 3.0, "model": {"preset": "hrnet-tiny"}, "epochs": 2, "batch_size": 4, "val_every": 1,
           "val_clicks": [0, 1], "fg_weight": 40.0, "morphology": {"pairs": 4, "triplets": 4, "weight": 0.01},
           "device": "cpu"}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root, cfg


def test_a_pack_holds_the_same_data_as_the_raw_folder(generic_training_data, tmp_path, monkeypatch):
    """Issue 22: compared with the folder itself — the labels as written in landmarks.csv, each film's shape, and
    the film preprocessed afresh (not through the preprocessing cache the pack command has just filled)."""
    from skimage.io import imread

    from napari_interactive_landmarks.data.cache import preprocess
    from napari_interactive_landmarks.data.pack import read_pack

    monkeypatch.setenv("NAPARI_LANDMARKS_CACHE", str(tmp_path / "cache"))
    root, cfg = generic_training_data
    pack = tmp_path / "g.pack.npz"
    assert main(["pack", "--config", str(root / "config.yaml"), "--out", str(pack), "--no-progress"]) == 0
    header, *packed = read_pack(pack)
    assert header["counts"] == {"train": 7, "val": 3} and header["jpeg_quality"] == 95
    landmarks = yaml.safe_load((root / "schema.yaml").read_text())["landmarks"]
    labels = {}
    with (root / "landmarks.csv").open() as f:
        for row in csv.DictReader(f):
            labels.setdefault(row["image"], {})[row["label"]] = (float(row["row"]), float(row["col"]))
    split = json.loads((root / "split.json").read_text())
    (h, w) = cfg["input_size"]
    for part, b in zip(("train", "val"), packed):
        assert list(b.names) == split[part]
        for i, name in enumerate(b.names):
            want = np.array([labels[name][n] for n in landmarks])
            np.testing.assert_array_equal(b.orig_coords[i], want)
            film = imread(root / name)
            assert tuple(b.orig_shapes[i]) == film.shape[:2]
            net = np.stack([(want[:, 0] + 0.5) * h / film.shape[0] - 0.5, (want[:, 1] + 0.5) * w / film.shape[1] - 0.5], 1)
            np.testing.assert_allclose(b.coords[i], net, atol=1e-4)  # float32
            assert np.isnan(b.spacing[i])
            fresh = np.clip(np.round(preprocess(film, (h, w)) * 255), 0, 255).astype(int)
            diff = np.abs(b.images[i].astype(int) - fresh)
            # JPEG q95 on the noisy phantoms (worst case; smooth radiographs lose less, see docs/history.md)
            assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 6, (name, diff.mean(), diff.max())


def test_training_from_a_pack_and_from_the_raw_folder_see_the_same_batches(generic_training_data, tmp_path,
                                                                            monkeypatch):
    from napari_interactive_landmarks.training.trainer import Trainer, load_config

    monkeypatch.setenv("NAPARI_LANDMARKS_CACHE", str(tmp_path / "cache"))
    root, _ = generic_training_data
    pack = tmp_path / "g.pack.npz"
    assert main(["pack", "--config", str(root / "config.yaml"), "--out", str(pack), "--no-progress"]) == 0
    cfg = load_config(root / "config.yaml")
    from_raw = Trainer({**cfg, "out_dir": str(tmp_path / "a")})
    from_pack = Trainer({**cfg, "root": None, "pack": str(pack), "out_dir": str(tmp_path / "b")})
    from_raw.load_data()
    from_pack.load_data()
    assert from_raw.pairs.tolist() == from_pack.pairs.tolist()  # morphology sets from identical landmarks
    ia, ca = from_raw._batch(np.arange(4))
    ib, cb = from_pack._batch(np.arange(4))
    torch.testing.assert_close(ca, cb)
    assert float((ia - ib).abs().mean()) < 2.0 / 255 * 2  # the same augmented images up to JPEG noise
    assert main(["train", "--config", str(root / "config.yaml"), "--pack", str(pack), "--epochs", "1",
                 "--out-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    assert (tmp_path / "c" / "best.safetensors").is_file()


def test_a_pack_for_another_config_is_refused_before_training(generic_training_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_LANDMARKS_CACHE", str(tmp_path / "cache"))
    root, cfg = generic_training_data
    pack = tmp_path / "g.pack.npz"
    assert main(["pack", "--config", str(root / "config.yaml"), "--out", str(pack), "--no-progress"]) == 0
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**cfg, "input_size": [96, 48]}))
    capsys.readouterr()
    rc = main(["train", "--config", str(other), "--pack", str(pack), "--out-dir", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "input size [128, 64]" in err[0]
    assert not (tmp_path / "x").exists()
    spine = tmp_path / "spine.yaml"
    spine.write_text(yaml.safe_dump({**cfg, "schema": "aasce-spine68"}))
    rc = main(["train", "--config", str(spine), "--pack", str(pack), "--out-dir", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "landmark set" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a pack")
    rc = main(["train", "--config", str(root / "config.yaml"), "--pack", str(tmp_path / "junk.npz"),
               "--out-dir", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "not a training pack" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # an existing pack is not overwritten without --overwrite
    before = pack.read_bytes()
    assert main(["pack", "--config", str(other), "--out", str(pack), "--no-progress"]) == 2
    assert pack.read_bytes() == before


# --------------------------------------------------------------------------- does a click harm the others?


def test_others_delta_and_harm_rate_on_a_constructed_case():
    from napari_interactive_landmarks.evaluation.metrics import collapsed_onto_click, others_delta
    from napari_interactive_landmarks.evaluation.protocol import _harm_summary

    # 4 landmarks, 2 clicks. Click 1 (landmark 0) lowers the others' errors by 2 on average; click 2
    # (landmark 3) raises the remaining two's errors by 1 and 3 → mean +2.
    errors = np.array([[10.0, 4.0, 6.0, 8.0],
                       [0.0, 2.0, 4.0, 6.0],
                       [0.0, 3.0, 7.0, 0.0]])
    d = others_delta(errors, [0, 3])
    np.testing.assert_allclose(d, [-2.0, 2.0])
    # a second image whose first click harms and second helps; a third with no second click made
    d2 = others_delta(np.array([[5.0, 5.0], [0.0, 6.0], [0.0, 6.0]]), [0])
    assert d2[0] == 1.0 and np.isnan(d2[1])
    s = _harm_summary([d, np.array([1.0, -1.0]), d2], [np.zeros(2, bool)] * 3, [2, 2, 1], 2)
    np.testing.assert_allclose(s["others_delta"], [(-2 + 1 + 1) / 3, (2 - 1) / 2])
    np.testing.assert_allclose(s["harm_rate"], [200 / 3, 50.0])
    assert s["harm_rate_all"] == pytest.approx(60.0)  # 3 of 5 clicks made

    # collapse: landmark 1 (true position 40 px from the click) ends 5 px from it after the click
    gt = np.array([[100.0, 50.0], [140.0, 50.0], [300.0, 50.0]])
    coords = np.array([[[60.0, 50.0], [150.0, 50.0], [300.0, 50.0]],
                       [[100.0, 50.0], [105.0, 50.0], [301.0, 50.0]]])
    assert collapsed_onto_click(coords, gt, [0]).tolist() == [True]
    coords[1, 1] = [138.0, 50.0]
    assert collapsed_onto_click(coords, gt, [0]).tolist() == [False]


def test_damage_counts_a_well_placed_point_that_a_click_sends_away():
    from napari_interactive_landmarks.evaluation.metrics import damaged_by_click
    from napari_interactive_landmarks.evaluation.protocol import _harm_summary

    # 3 landmarks, 2 clicks: click 1 (landmark 0) sends landmark 2 from 8 px (well placed) to 25 px: damage;
    # click 2 (landmark 1) moves landmark 2 from 25 to 40 (it was not well placed: harm, not damage)
    errors = np.array([[30.0, 15.0, 8.0], [0.0, 15.0, 25.0], [0.0, 0.0, 40.0]])
    assert damaged_by_click(errors, [0, 1], 10.0, 20.0).tolist() == [True, False]
    # the threshold is "more than bad": 20 exactly is no damage; a clicked landmark's own change never counts
    assert damaged_by_click(np.array([[9.0, 5.0], [0.0, 20.0]]), [0], 10.0, 20.0).tolist() == [False]
    assert damaged_by_click(np.array([[5.0, 50.0], [40.0, 50.0]]), [0], 10.0, 20.0).tolist() == [False]
    s = _harm_summary([np.array([1.0, 1.0]), np.array([-1.0, np.nan])], [np.zeros(2, bool)] * 2, [2, 1], 2,
                      [np.array([True, False]), np.array([False, False])])
    assert s["damage_rate"] == [50.0, 0.0] and s["damage_rate_all"] == pytest.approx(100 / 3)


def test_evaluate_reports_others_delta_and_harm_rate(tiny_run, tmp_path):
    from napari_interactive_landmarks.data.datasets import load_dataset
    from napari_interactive_landmarks.evaluation.protocol import evaluate_dataset, format_report
    from napari_interactive_landmarks.inference import Predictor

    _, out, _ = tiny_run
    p = Predictor.from_file(out / "best.safetensors", device="cpu")
    samples = load_dataset("phantom", None, "calib", p.schema.landmarks)[:3]
    r = evaluate_dataset(p, samples, max_clicks=3, progress=False)
    assert len(r["others_delta"]) == len(r["harm_rate"]) == len(r["collapse_rate"]) == 3
    assert all(0 <= v <= 100 for v in r["harm_rate"]) and 0 <= r["harm_rate_all"] <= 100
    assert len(r["damage_rate"]) == 3 and r["damage_thresholds"] == [10.0, 20.0]
    assert "harm" in format_report(r) and "damage" in format_report(r)


# --------------------------------------------------------------------------- DistributedDataParallel


def test_torchrun_trains_with_two_processes_on_cpu(tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo on CPU): the data is sharded between the two processes, metrics
    and weights are written once, and both processes stop together."""
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "ddp", "dataset": "phantom", "phantom": {"num_train": 16, "num_val": 4, "original_shape": [256, 128]},
        "schema": "phantom-spine24", "input_size": [64, 32], "sigma": 2.0, "model": {"preset": "hrnet-tiny"},
        "epochs": 2, "batch_size": 2, "val_every": 1, "val_clicks": [0, 1], "fg_weight": 40.0,
        "morphology": {"pairs": 4, "triplets": 4, "weight": 0.01}, "device": "cpu", "num_threads": 1}))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "napari_interactive_landmarks.cli", "train", "--config", str(cfg), "--out-dir", str(out),
         "--no-progress"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1  # printed by rank 0 only
    assert results[0]["world_size"] == 2 and results[0]["epochs"] == 2
    assert results[0]["samples_per_epoch_this_process"] == 8  # half of the 16 training images
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # one row per epoch: written once
    assert (out / "best.safetensors").is_file() and (out / "last.ckpt").is_file()
    from napari_interactive_landmarks.model_card import ModelCard
    from napari_interactive_landmarks.weights import load_weights

    assert ModelCard.from_metadata(load_weights(out / "best.safetensors")[1]).training["world_size"] == 2


def test_a_weights_file_alone_can_be_registered(tiny_run, tmp_path):
    """A run's best.safetensors brought back from a GPU machine without its best.yaml is enough to ship it."""
    from napari_interactive_landmarks.inference import Predictor
    from napari_interactive_landmarks.training.export import register_run
    from napari_interactive_landmarks.weights import get_entry, verify_file

    _, out, _ = tiny_run
    run = tmp_path / "returned"
    run.mkdir()
    (run / "best.safetensors").write_bytes((out / "best.safetensors").read_bytes())
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("models: {}\n")
    register_run("returned", run, target_dir=tmp_path / "w", manifest_path=manifest)
    entry = get_entry("returned", manifest)
    assert entry["input_size"] == [128, 64] and entry["training"]["best_epoch"] >= 1
    path = verify_file(tmp_path / "w" / entry["file"], entry["sha256"])
    p = Predictor.from_entry("returned", entry, path)
    assert p.num_landmarks == 16


def test_dataloader_workers_give_the_same_batches_as_the_main_process(tiny_run, tmp_path):
    """Augmentation runs in DataLoader workers on a GPU machine; each sample's augmentation is fixed by the
    epoch's seeds, so the batches do not depend on the number of workers."""
    from napari_interactive_landmarks.training.trainer import Trainer

    trainer, _, _ = tiny_run
    batches = []
    for workers in (0, 2):
        t = Trainer({**trainer.cfg, "out_dir": str(tmp_path / f"w{workers}"), "num_workers": workers})
        t.load_data(trainer.train_set, trainer.val_set)
        t._make_loader()
        t._set_epoch_rngs()
        t._sampler.batches = t._epoch_batches()
        batches.append([(im.clone(), c.clone()) for im, c in t._loader])
    assert len(batches[0]) == len(batches[1]) == len(trainer.train_set) // int(trainer.cfg["batch_size"])
    for (ia, ca), (ib, cb) in zip(*batches):
        assert torch.equal(ia, ib) and torch.equal(ca, cb)


def test_a_bf16_training_step_runs_and_keeps_fp32_losses(tiny_run, tmp_path):
    """bf16 autocast of the forward passes (for GPUs; CPU autocast runs the same code here)."""
    from napari_interactive_landmarks.training.trainer import Trainer

    trainer, _, _ = tiny_run
    t = Trainer({**trainer.cfg, "out_dir": str(tmp_path / "bf16"), "amp": "bf16", "max_iterative_rounds": 2})
    t.load_data(trainer.train_set, trainer.val_set)
    t.click_rng = FixedRounds(2, 2)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    m = t.train_step(*t._batch(np.arange(4)))
    assert all(np.isfinite(v) for v in m.values()) and m["loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # autocast, not a bf16 model
    assert np.isfinite(t.validate(clicks=[0, 1])[1])
    with pytest.raises(ValueError, match="amp"):
        Trainer({**trainer.cfg, "out_dir": str(tmp_path / "x"), "amp": "fp8"})


def test_a_pack_validates_on_the_part_the_config_names(generic_training_data, tmp_path, monkeypatch):
    """Issue 18: ``val_part: calib`` chooses the epoch on that part of the pack's validation images only."""
    from napari_interactive_landmarks.training.trainer import Trainer, load_config

    monkeypatch.setenv("NAPARI_LANDMARKS_CACHE", str(tmp_path / "cache"))
    root, raw_cfg = generic_training_data
    split = {**json.loads((root / "split.json").read_text()), "calib": ["img8.png"], "eval": ["img7.png", "img9.png"],
             "stray": ["img8.png", "img0.png"]}
    (tmp_path / "halves.json").write_text(json.dumps(split))
    # the pack of a config that validates on calib still holds all of val (as cpu_train.sh builds it)
    (tmp_path / "calib.yaml").write_text(yaml.safe_dump({**raw_cfg, "split_file": str(tmp_path / "halves.json"),
                                                          "val_part": "calib"}))
    pack = tmp_path / "g.pack.npz"
    assert main(["pack", "--config", str(tmp_path / "calib.yaml"), "--out", str(pack), "--no-progress"]) == 0
    cfg = {**load_config(tmp_path / "calib.yaml"), "root": None, "pack": str(pack)}
    t = Trainer({**cfg, "val_part": "calib", "out_dir": str(tmp_path / "a")})
    t.load_data()
    assert list(t.val_set.names) == ["img8.png"] and len(t.train_set) == 7
    assert t.model_card({}).training["val_part"] == "calib"  # the weights say which films chose their epoch
    full = Trainer({**cfg, "val_part": "val", "out_dir": str(tmp_path / "b")})
    full.load_data()
    assert sorted(full.val_set.names) == ["img7.png", "img8.png", "img9.png"]
    np.testing.assert_array_equal(t.val_set.images[0], full.val_set.images[list(full.val_set.names).index("img8.png")])
    for part, message in (("tune", "no such validation part"), ("stray", "shares 1 images with its train part")):
        with pytest.raises(ValueError, match=message):
            Trainer({**cfg, "val_part": part, "out_dir": str(tmp_path / "c")}).load_data()

