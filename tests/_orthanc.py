"""A real Orthanc PACS with its DICOMweb plugin, started on free ports with a temporary storage folder and stopped
after (Debian: orthanc, orthanc-dicomweb). Used by tests/test_dicomweb.py and benchmarks/pacs_round_trip.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "radiologist", "not-in-any-log-7f3a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing() -> str | None:
    """Why Orthanc cannot be started here (None when it can)."""
    if shutil.which("Orthanc") is None or not PLUGIN.is_file():
        return ("Orthanc with its DICOMweb plugin is not installed (Debian: orthanc, orthanc-dicomweb; "
                "scripts/apt-packages.txt)")
    return None


@contextmanager
def running_orthanc(work: Path):
    """Yield {"url", "dicomweb", "auth"} of an Orthanc serving from ``work`` (authentication on)."""
    import requests

    work = Path(work)
    http = free_port()
    config = {"Name": "napari-landmarks-test", "StorageDirectory": str(work / "db"), "IndexDirectory": str(work / "db"),
              "HttpPort": http, "DicomPort": free_port(), "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "Plugins": [str(PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (work / "orthanc.json").write_text(json.dumps(config))
    url = f"http://127.0.0.1:{http}"
    with open(work / "orthanc.log", "w") as log:
        proc = subprocess.Popen([shutil.which("Orthanc"), str(work / "orthanc.json")], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                try:
                    if requests.get(f"{url}/system", auth=(USER, PASSWORD), timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"Orthanc exited: {(work / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.1)
            else:
                raise RuntimeError("Orthanc did not start in 20 s")
            yield {"url": url, "dicomweb": f"{url}/dicom-web", "auth": (USER, PASSWORD)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
