"""Fetch + predict + store of one study over DICOMweb, timed (issue 37): a real Orthanc (tests/_orthanc.py) holding
one study of N films made DICOM from ISBI 2015 cephalograms (0.1 mm PixelSpacing), then
``napari-landmarks predict --dicomweb … --study … --store-sr`` with the shipped isbi-ceph, three times; prints the
wall time of each run. Nothing is written to the repository.

    python benchmarks/pacs_round_trip.py --films 1 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default=str(REPO.parent / "shared/datasets/isbi2015/RawImage/Test1Data"))
    args = ap.parse_args()
    import pydicom
    import requests
    from pydicom.uid import generate_uid

    from napari_interactive_landmarks.cli import main as cli
    from napari_interactive_landmarks.io.images import read_image
    from tests._orthanc import PASSWORD, USER, missing, running_orthanc
    from tests.test_io import _write_dicom

    if missing():
        sys.exit(missing())
    os.environ["NAPARI_LANDMARKS_DICOMWEB_USER"], os.environ["NAPARI_LANDMARKS_DICOMWEB_PASSWORD"] = USER, PASSWORD
    films = sorted(Path(args.root).glob("*.jpg"))
    with tempfile.TemporaryDirectory() as work, running_orthanc(Path(work)) as pacs:
        for n in args.films:
            for run in range(args.runs):
                study, series = generate_uid(), generate_uid()
                for i, src in enumerate(films[:n]):
                    arr = read_image(src).array
                    path = _write_dicom(Path(work) / f"f{n}-{run}-{i}.dcm", np.round(arr).astype(np.uint16),
                                        pixel_spacing=(0.1, 0.1))
                    ds = pydicom.dcmread(path)
                    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, f"B{n}"
                    ds.save_as(path)
                    requests.post(f"{pacs['url']}/instances", data=path.read_bytes(), auth=pacs["auth"],
                                  timeout=60).raise_for_status()
                t0 = time.perf_counter()
                rc = cli(["predict", "--dicomweb", pacs["dicomweb"], "--study", study, "--store-sr", "--model",
                          "isbi-ceph", "--threads", str(args.threads), "--out", str(Path(work) / f"out{n}-{run}")])
                print(f"{n} film(s), run {run + 1}: fetch + predict + store {time.perf_counter() - t0:.2f} s (rc {rc})",
                      flush=True)


if __name__ == "__main__":
    main()
