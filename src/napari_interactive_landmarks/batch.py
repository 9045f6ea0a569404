"""Batch prediction of an archive on Dask (issue 38): ``napari-landmarks predict … --workers N | --scheduler ADDRESS``
and :func:`predict_on_dask` for notebooks.

Each Dask worker process loads a model once (the first film it gets) and keeps it; the films are streamed (at most a
few per worker are in flight, so an archive of any size never has to be listed in memory at once beyond its paths);
each film's landmark file is written by the worker atomically, next to the others, exactly as ``predict`` writes it.
A film whose file exists already is skipped (a re-run resumes), unless ``overwrite``. A film that fails is one line
of ``predict-summary.csv`` (film, status, reason) and the others go on. When a worker dies, Dask hands its films to
another worker: a film written before the death is found written (not written twice), one that was not is done
again — none lost, none duplicated.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BatchError", "BatchSummary", "predict_on_dask", "output_path", "SUMMARY_FILE"]

SUMMARY_FILE = "predict-summary.csv"
PACKAGE = "napari-interactive-landmarks"
_WORKER_STATE: dict = {}  # per worker process: the loaded predictors


class BatchError(RuntimeError):
    """The batch cannot run (scheduler unreachable, workers without the package, output folder not writable)."""


@dataclass
class BatchSummary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already done (resume)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def films_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else float("nan")


def output_path(path, out_dir, fmt: str) -> Path:
    path = Path(path)
    return Path(out_dir) / f"{path.stem}.landmarks.{'sr.dcm' if fmt == 'sr' else fmt}"


def _predict_one(path: str, out_dir: str, model: str | None, weights: str | None, fmt: str, overwrite: bool,
                 precision: str, threads: int | None, fit_check: bool = True) -> tuple[str, str, str]:
    """On a worker: (film, "written" | "done" | "failed", destination or reason). The model is loaded once per worker
    process and reused."""
    import torch

    from .inference import LandmarkSession, Predictor
    from .io.images import read_image
    from .model_choice import choose_model_for_image, misfit_reason
    from .weights import load_manifest

    dest = output_path(path, out_dir, fmt)
    if dest.exists() and not overwrite:
        return path, "done", str(dest)
    try:
        if threads and _WORKER_STATE.get("threads") != threads:
            torch.set_num_threads(int(threads))
            _WORKER_STATE["threads"] = threads
        img = read_image(path)
        name = weights or model or choose_model_for_image(load_manifest(), img.array.shape[:2], synthetic=False)
        key = (name, precision)
        pred = _WORKER_STATE.get(key)
        if pred is None:
            pred = Predictor.from_file(weights) if weights else Predictor.from_name(name)
            pred.set_precision(precision)
            _WORKER_STATE[key] = pred
        if fit_check and (model or weights):  # a given model that does not fit the film: refused, as predict does
            why = misfit_reason(pred.name, pred.card.to_entry() if pred.card is not None else {},
                                img.array.shape[:2], image_name=Path(path).name, synthetic=None)
            if why:
                return path, "failed", why
        session = LandmarkSession(pred, img.array, spacing=img.spacing, image_path=str(path))
        session.detect()
        session.save(dest, overwrite=overwrite)
        return path, "written", str(dest)
    except FileExistsError:
        return path, "done", str(dest)  # written meanwhile (a film redone after its worker died)
    except (ValueError, RuntimeError, OSError) as exc:
        return path, "failed", str(exc).replace(f"{path}: ", "")


def _check_workers(client) -> None:
    """Every worker can import the package (one line naming it when one cannot)."""
    def probe():
        import importlib.util

        return importlib.util.find_spec("napari_interactive_landmarks") is not None

    try:
        answers = client.run(probe)
    except Exception as exc:  # e.g. a worker that cannot unpickle the probe
        raise BatchError(f"the Dask workers cannot run the batch: {type(exc).__name__}: {exc}") from None
    if not answers:
        raise BatchError("the Dask cluster has no workers")
    lacking = [w for w, ok in answers.items() if not ok]
    if lacking:
        raise BatchError(f"{len(lacking)} of {len(answers)} Dask workers lack the package '{PACKAGE}' (e.g. "
                         f"{lacking[0]}): install it in the workers' environment (pip install {PACKAGE})")


def predict_on_dask(paths: Iterable, out_dir, client, *, model: str | None = None, weights: str | None = None,
                    fmt: str = "json", overwrite: bool = False, precision: str = "auto",
                    threads_per_worker: int | None = None, total: int | None = None, progress: bool = True,
                    in_flight_per_worker: int = 4, fit_check: bool = True) -> BatchSummary:
    """Predict every film of ``paths`` (an iterable, consumed as the work goes) on the workers of the Dask
    ``client``; the landmark files go to ``out_dir`` (``fmt``: json, csv or sr); ``predict-summary.csv`` there lists
    every film's status. Returns the :class:`BatchSummary`."""
    from distributed import as_completed
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise BatchError(f"{out_dir}: the output folder is not writable; nothing was started")
    _check_workers(client)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    limit = workers * max(1, in_flight_per_worker)
    summary = BatchSummary()
    t0 = time.perf_counter()
    todo = iter(paths)
    pending = as_completed()
    bar = tqdm(total=total, unit="film", disable=not progress, desc="films")

    def submit_next() -> bool:
        for p in todo:
            p = str(p)
            if not overwrite and output_path(p, out_dir, fmt).exists():
                summary.skipped.append(p)
                bar.update(1)
                continue
            pending.add(client.submit(_predict_one, p, str(out_dir), model, weights, fmt, overwrite, precision,
                                      threads_per_worker, fit_check, pure=False, retries=2))
            return True
        return False

    for _ in range(limit):
        if not submit_next():
            break
    for fut in pending:
        try:
            path, status, what = fut.result()
        except Exception as exc:  # the task itself failed on every retry (e.g. workers dying one after another)
            summary.failed.append(("?", f"{type(exc).__name__}: {exc}"))
        else:
            if status == "written":
                summary.written.append(path)
            elif status == "done":
                summary.skipped.append(path)
            else:
                summary.failed.append((path, what))
        bar.update(1)
        submit_next()
    bar.close()
    summary.seconds = time.perf_counter() - t0
    _write_summary(out_dir, summary)
    return summary


def _write_summary(out_dir: Path, summary: BatchSummary) -> None:
    from .io.files import write_texts

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["film", "status", "reason"])
    for p in summary.written:
        w.writerow([p, "written", ""])
    for p in summary.skipped:
        w.writerow([p, "already done", ""])
    for p, why in summary.failed:
        w.writerow([p, "failed", why])
    try:
        write_texts({out_dir / SUMMARY_FILE: buf.getvalue()}, overwrite=True)
    except OSError as exc:
        print(f"the summary could not be written: {exc}", file=sys.stderr)


def connect(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int | None = None):
    """A Dask client: of the cluster at ``scheduler``, or of a LocalCluster of ``workers`` processes. Raises
    :class:`BatchError` (one line) when the scheduler cannot be reached."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BatchError("Dask's distributed scheduler is not installed: pip install "
                         f"\"{PACKAGE}[all]\" (or distributed)") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise BatchError(f"the Dask scheduler at {scheduler} cannot be reached ({type(exc).__name__}); nothing "
                             "was written") from None
    import logging

    cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster)
