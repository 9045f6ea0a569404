import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_LANDMARKS_SHARED", REPO.parent / "shared"))
DATASETS = SHARED / "datasets"

torch.set_num_threads(min(2, torch.get_num_threads()))

from ._ci_strict import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402,F401  (hooks)


def pytest_sessionstart(session):
    """Qt aborts the whole run (no summary) when a system library of its xcb platform is missing: stop first,
    saying which packages to install."""
    from napari_interactive_landmarks._system import missing_qt_packages, qt_setup_hint

    missing = missing_qt_packages()
    if missing:
        pytest.exit(qt_setup_hint(missing), returncode=3)


SLOW_TESTS = {line.split("#")[0].strip() for line in (Path(__file__).parent / "slow_tests.txt").read_text().splitlines()
              if line.split("#")[0].strip()}


def pytest_collection_modifyitems(config, items):
    """The quick tier (``-m "not slow"``, under 2 minutes on 2 cores) leaves out the tests listed in slow_tests.txt and
    those already marked slow in their module."""
    for item in items:
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _recovery_folder_of_its_own(tmp_path, monkeypatch):
    """Each test keeps a closed viewer's unsaved corrections in a folder of its own (never the user's cache: a kept
    file would be offered back to the next test's Detect)."""
    monkeypatch.setenv("NAPARI_LANDMARKS_RECOVERY_DIR", str(tmp_path / "recovery"))


def phantom_cached(n, seed, shape=(128, 64), num_vertebrae=4):
    from napari_interactive_landmarks.data.cache import CachedSet
    from napari_interactive_landmarks.data.phantom import phantom_set

    ims, cs = phantom_set(n, seed, shape=shape, num_vertebrae=num_vertebrae)
    return CachedSet([f"p{i}" for i in range(n)], (ims * 255).astype(np.uint8), cs.astype(np.float32),
                     np.tile(shape, (n, 1)), cs, np.full(n, np.nan))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny interactive model trained for ~40 s on generated phantoms (16 landmarks, 128 × 64).
    Returns (trainer, history of epoch losses, validation before training)."""
    from napari_interactive_landmarks.data.phantom import phantom_schema_dict
    from napari_interactive_landmarks.training.trainer import Trainer

    out = tmp_path_factory.mktemp("tiny_run")
    tr, va = phantom_cached(64, 0), phantom_cached(16, 1)
    t = Trainer({"schema": phantom_schema_dict(4), "input_size": [128, 64], "sigma": 3.0,
                 "model": {"preset": "hrnet-tiny"}, "epochs": 10, "batch_size": 8, "lr": 3e-3, "val_every": 5,
                 "val_clicks": [0, 3], "morphology": {"pairs": 10, "triplets": 10, "weight": 0.01},
                 "fg_weight": 40.0, "out_dir": str(out), "seed": 0, "loss_stride": 1, "device": "cpu"})
    t.load_data(tr, va)
    before = t.validate(clicks=[0, 1, 3])
    t.fit(progress=False)
    return t, out, before
