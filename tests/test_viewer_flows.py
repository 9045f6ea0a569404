"""The viewer must survive everyday flows with its canvas really painting (a shown window under Xvfb, software
OpenGL): each flow runs in a subprocess, so that a crash of the GL driver is an exit code (139 = SIGSEGV) and not
a dead test session. The in-process widget tests never paint and could not see this crash."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")

SCRIPT = Path(__file__).parent / "scripts" / "viewer_flows.py"


@pytest.mark.parametrize("flow", ["remove-image", "switch-model", "delete-landmarks"])
def test_viewer_survives_the_flow_with_a_painting_canvas(flow):
    if not os.environ.get("DISPLAY"):
        pytest.skip("no X display (pytest-xvfb provides one; run the tests under it or xvfb-run)")
    proc = subprocess.run([sys.executable, "-X", "faulthandler", str(SCRIPT), flow], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"flow {flow!r} ended with exit code {proc.returncode}:\n{tail}"
    assert "FLOW OK" in proc.stdout, tail
