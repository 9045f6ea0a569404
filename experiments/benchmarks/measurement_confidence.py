"""Extra cost of the measurements' confidence (Monte Carlo over the landmarks' ERE) on a 68-point spine and
a 19-point cephalogram: compute_measurements with ere vs without, median of 300 runs. Prints numbers.

    python experiments/benchmarks/measurement_confidence.py   (from the repository root: it reuses the tests' spine builders)
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import numpy as np
from napari_interactive_landmarks.measurements import compute_measurements
from napari_interactive_landmarks.schemas import load_schema
from tests.test_measurements import make_spine, C_TILTS, S_TILTS, cephalo


def timeit(fn, n=300):
    for _ in range(10):
        fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); t.append(time.perf_counter() - t0)
    return 1e3 * np.median(t), 1e3 * np.percentile(t, 95)


rng = np.random.default_rng(0)
for label, schema, coords, shape in [
        ("aasce-spine68 (C)", "aasce-spine68", make_spine(C_TILTS, width=120, height=70, gap=20), (2500, 1000)),
        ("aasce-spine68 (S)", "aasce-spine68", make_spine(S_TILTS, width=120, height=70, gap=20), (2500, 1000)),
        ("isbi-ceph19", "isbi-ceph19", cephalo(), (2400, 1935))]:
    s = load_schema(schema)
    ere = rng.uniform(5, 90, s.num_landmarks)
    base = timeit(lambda: compute_measurements(s, coords, image_shape=shape))
    conf = timeit(lambda: compute_measurements(s, coords, image_shape=shape, ere=ere))
    print(f"{label}: without ere {base[0]:.2f} ms (p95 {base[1]:.2f}), with ere {conf[0]:.2f} ms (p95 {conf[1]:.2f}); "
          f"extra {conf[0] - base[0]:.2f} ms median, {conf[1] - base[1]:.2f} ms p95")
