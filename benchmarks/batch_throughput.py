"""Batch prediction throughput (issue 38 item 3): films/s of ``napari-landmarks predict`` on N spine films in one
process, on a Dask LocalCluster of 1 worker and of 2 workers (``--workers``), each worker's memory, and the bare
model's time per film (read + detect, no file written) for the overhead. Prints a table; writes nothing in the repo.

    python benchmarks/batch_throughput.py --films 200 --model aasce-spine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # 1 when a film was refused
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", type=int, default=200)
    ap.add_argument("--model", default="aasce-spine")
    ap.add_argument("--root", default=str(REPO.parent / "shared/datasets/aasce/boostnet_labeldata/data/training"))
    args = ap.parse_args()
    import numpy as np
    import torch

    from napari_interactive_landmarks.inference import LandmarkSession, Predictor
    from napari_interactive_landmarks.io.images import read_image

    cores = os.cpu_count() or 1
    films = sorted(Path(args.root).glob("*.jpg"))[: args.films]
    exe = str(Path(sys.executable).with_name("napari-landmarks"))
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        archive = Path(work) / "archive"
        archive.mkdir()
        for f in films:
            os.symlink(f, archive / f.name)
        # the bare model: read + detect per film, one process, all cores
        torch.set_num_threads(cores)
        pred = Predictor.from_name(args.model)
        pred.set_precision("auto")
        t0 = time.perf_counter()
        for f in films[:50]:
            img = read_image(f)
            LandmarkSession(pred, img.array, spacing=img.spacing).detect()
        bare = (time.perf_counter() - t0) / min(50, len(films))
        for label, extra in (("one process", []), ("--workers 1", ["--workers", "1"]), ("--workers 2", ["--workers", "2"])):
            out = Path(work) / label.replace(" ", "_")
            seconds = run([exe, "predict", str(archive), "--model", args.model, "--out", str(out), *extra])
            done = len(list(out.glob("*.landmarks.json")))
            rows[label] = {"seconds": round(seconds, 1), "films": done, "films_per_s": round(done / seconds, 2)}
            shutil.rmtree(out)
        # a worker's memory: one LocalCluster worker after 20 films
        from distributed import Client, LocalCluster

        from napari_interactive_landmarks.batch import predict_on_dask

        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
                Client(lc) as client:
            predict_on_dask(films[:20], Path(work) / "mem", client, model=args.model, progress=False,
                            threads_per_worker=cores)
            mem = [w["metrics"]["memory"] / 2**20 for w in client.scheduler_info()["workers"].values()]
    print(f"{len(films)} films of {args.root}, model {args.model}, {cores} cores; bare model (read + detect, one "
          f"process) {bare * 1000:.0f} ms a film = {1 / bare:.2f} films/s")
    print("how | wall s (incl. start) | films/s | × bare")
    for label, r in rows.items():
        print(f"{label} | {r['seconds']} | {r['films_per_s']} | {r['films_per_s'] * bare:.2f}")
    print(f"a worker's memory after 20 films: {np.mean(mem):.0f} MB")
    print(json.dumps({"bare_ms": round(bare * 1000, 1), "rows": rows, "worker_mb": round(float(np.mean(mem)), 1)}))


if __name__ == "__main__":
    main()
