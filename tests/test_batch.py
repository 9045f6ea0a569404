"""Batch prediction on Dask (issue 38): a real scheduler and two workers as separate processes, one killed midway;
every film written exactly once and equal to the single-process result; resume; bad input in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imsave

from napari_interactive_landmarks.cli import main
from napari_interactive_landmarks.data.phantom import make_phantom

from ._orthanc import free_port

pytest.importorskip("distributed", reason="Dask's distributed comes with the 'all' and 'testing' extras")
MODEL = "phantom-spine"


def _films(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        img, _ = make_phantom(np.random.default_rng(100 + i), shape=(1024, 512), num_vertebrae=6)
        out.append(folder / f"film{i:02d}.png")
        imsave(out[-1], (img * 255).astype(np.uint8), check_contrast=False)
    return out


def _dask(*args, log=None):
    exe = Path(sys.executable).with_name("dask")
    return subprocess.Popen([str(exe), *args], stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture
def cluster(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0")]
    try:
        from distributed import Client

        for _ in range(100):
            try:
                Client(address, timeout="1s").close()
                break
            except OSError:
                time.sleep(0.2)
        workers = [_dask("worker", address, "--nworkers", "1", "--nthreads", "1", "--no-nanny") for _ in range(2)]
        procs += workers
        with Client(address, timeout="10s") as c:
            c.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)


def _coords(folder: Path) -> dict:
    return {f.name: np.array([[q["row"], q["col"]] for q in json.loads(f.read_text())["points"]])
            for f in folder.glob("*.landmarks.json")}


def test_an_archive_on_a_real_cluster_survives_a_killed_worker(cluster, tmp_path):
    address, workers = cluster
    films = _films(tmp_path / "archive", 40)
    reference = tmp_path / "single"
    assert main(["predict", str(tmp_path / "archive"), "--model", MODEL, "--precision", "fp32", "--threads", "1",
                 "--out", str(reference)]) == 0
    out = tmp_path / "dask"
    killed = []

    def kill_one_midway():
        while len(list(out.glob("*.landmarks.json"))) < 6:
            time.sleep(0.02)
        workers[0].send_signal(signal.SIGKILL)
        killed.append(len(list(out.glob("*.landmarks.json"))))

    t = threading.Thread(target=kill_one_midway, daemon=True)
    t.start()
    rc = main(["predict", str(tmp_path / "archive"), "--model", MODEL, "--precision", "fp32", "--threads", "1",
               "--scheduler", address, "--out", str(out)])
    t.join(timeout=60)
    assert rc == 0 and killed and killed[0] < len(films)  # the worker died while films were left
    got, want = _coords(out), _coords(reference)
    assert sorted(got) == sorted(want) and len(got) == len(films)  # every film once: no file lost, none extra
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])  # identical to the single-process run
    summary = (out / "predict-summary.csv").read_text().splitlines()
    assert len(summary) == 1 + len(films)  # each film one line, none twice
    # a re-run resumes: nothing redone
    assert main(["predict", str(tmp_path / "archive"), "--model", MODEL, "--precision", "fp32", "--scheduler", address,
                 "--out", str(out)]) == 0
    assert all(line.endswith("already done,") for line in (out / "predict-summary.csv").read_text().splitlines()[1:])


def test_an_unreachable_scheduler_and_an_unwritable_folder_are_one_line_and_nothing_is_written(tmp_path, capsys,
                                                                                                  monkeypatch):
    _films(tmp_path / "archive", 2)
    port = free_port()
    assert main(["predict", str(tmp_path / "archive"), "--model", MODEL, "--scheduler", f"tcp://127.0.0.1:{port}",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "out").glob("*.json"))
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    # (as root every folder is writable: the refusal is shown with the permission check answering as for a user)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))
    assert main(["predict", str(tmp_path / "archive"), "--model", MODEL, "--workers", "1", "--out", str(locked)]) == 2
    assert "not writable" in capsys.readouterr().err
    assert list(locked.iterdir()) == []


def test_predict_on_dask_from_python_with_a_local_cluster(tmp_path):
    from distributed import Client, LocalCluster

    from napari_interactive_landmarks.batch import predict_on_dask

    films = _films(tmp_path / "archive", 4)
    (tmp_path / "archive" / "broken.png").write_bytes(b"not an image")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, \
            Client(lc) as client:
        summary = predict_on_dask((p for p in films + [tmp_path / "archive" / "broken.png"]), tmp_path / "out",
                                  client, model=MODEL, precision="fp32", progress=False)
    assert len(summary.written) == 4 and len(summary.failed) == 1 and "not a readable image" in summary.failed[0][1]
