import csv
import json

import numpy as np
import pytest

from napari_interactive_landmarks.cli import main
from napari_interactive_landmarks.data.phantom import make_phantom


@pytest.mark.parametrize("cmd", [[], ["train"], ["evaluate"], ["predict"], ["bench"], ["weights"]])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(cmd + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: napari-landmarks" in out


@pytest.fixture(scope="module")
def tiny_weights(tiny_run, tmp_path_factory):
    from napari_interactive_landmarks.training.export import register_run

    d = tmp_path_factory.mktemp("weights")
    (d / "manifest.yaml").write_text("models: {}\n")
    register_run("tiny-phantom", tiny_run[1], target_dir=d, manifest_path=d / "manifest.yaml")
    return d / "tiny-phantom.safetensors"


@pytest.fixture(scope="module")
def generic_dataset(tmp_path_factory):
    """A user's own dataset in the generic format: PNG images + landmarks.csv (long format)."""
    from skimage.io import imsave

    from napari_interactive_landmarks.data.phantom import phantom_schema_dict

    root = tmp_path_factory.mktemp("generic")
    names = phantom_schema_dict(4)["landmarks"]
    rng = np.random.default_rng(7)
    with (root / "landmarks.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "row", "col"])
        for i in range(4):
            img, pts = make_phantom(rng, shape=(256, 128), num_vertebrae=4)
            imsave(root / f"img{i}.png", (img * 255).astype(np.uint8), check_contrast=False)
            for n, (r, c) in zip(names, pts):
                w.writerow([f"img{i}.png", n, f"{r:.2f}", f"{c:.2f}"])
    return root


def test_evaluate_runs_the_click_protocol_and_writes_json(tiny_weights, generic_dataset, tmp_path):
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--weights", str(tiny_weights), "--dataset", "generic", "--root", str(generic_dataset),
               "--split", ".", "--clicks", "3", "--json", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["unit"] == "px" and len(res["mre_model"]) == 4 and len(res["mre_manual"]) == 4
    assert set(res["noc"]) == {"20", "30", "40", "50"} and set(res["fr"]) == set(res["noc"])
    assert res["mre_model"][0] == pytest.approx(res["mre_manual"][0])
    assert res["mre_model"][3] < res["mre_model"][0]


def test_predict_writes_landmark_files_and_refuses_to_overwrite(tiny_weights, generic_dataset, tmp_path, capsys):
    from napari_interactive_landmarks.io.landmarks import read_landmarks_json

    img = generic_dataset / "img0.png"
    rc = main(["predict", str(img), "--weights", str(tiny_weights), "--out", str(tmp_path), "--device", "cpu",
               "--correct", "2:40,30"])
    assert rc == 0
    lf = read_landmarks_json(tmp_path / "img0.landmarks.json")
    assert lf.coords.shape == (16, 2) and lf.pinned[2] and tuple(lf.coords[2]) == (40.0, 30.0)
    rc = main(["predict", str(img), "--weights", str(tiny_weights), "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 1  # existing file kept, reason on stderr
    assert "exists" in capsys.readouterr().err


def test_bench_prints_the_figures(tiny_weights, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--weights", str(tiny_weights), "--runs", "5", "--size", "300", "150", "--json", str(out),
               "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("median_ms", "p95_ms", "forward_ms", "peak_mb"):
        assert res[key] > 0
    assert res["p95_ms"] >= res["median_ms"]


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    rc = main(["evaluate", "--model", "no-such-model", "--dataset", "aasce", "--root", str(tmp_path), "--split", "training"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "Traceback" not in err
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not weights")
    rc = main(["predict", str(tmp_path / "x.png"), "--weights", str(bad)])
    assert rc == 2 and "safetensors" in capsys.readouterr().err


def test_evaluate_reports_calibration_and_ere_order(tiny_weights, generic_dataset, tmp_path):
    out = tmp_path / "eval_ere.json"
    rc = main(["evaluate", "--weights", str(tiny_weights), "--dataset", "generic", "--root", str(generic_dataset),
               "--split", ".", "--clicks", "2", "--order", "ere", "--json", str(out), "--no-progress", "--device", "cpu",
               "--calibration-plots", str(tmp_path / "plots")])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["order"] == "ere"
    for key in ("ece_before", "ece_after", "ere_spearman", "ere_auroc"):
        assert key in res
    assert 0.0 <= res["ece_before"] <= 1.0
    cal = res["calibration"]
    for key in ("ere_binned_pearson", "ere_binned_pearson_full_groups", "good_erroneous", "ere_group_size"):
        assert key in cal
    assert (tmp_path / "plots").is_dir() and len(list((tmp_path / "plots").glob("*.png"))) == 2


def test_calibrate_dry_run_fits_one_temperature_per_landmark(tiny_weights, generic_dataset, capsys):
    rc = main(["calibrate", "--weights", str(tiny_weights), "--dataset", "generic", "--root", str(generic_dataset),
               "--split", ".", "--dry-run", "--no-progress", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "over 16 landmarks" in out and "ECE" in out
