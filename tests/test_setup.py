"""The fresh-machine set-up: the README's commands are what CI runs, and missing system libraries are named."""

import re
from pathlib import Path

from napari_interactive_landmarks import _system

REPO = Path(__file__).resolve().parents[1]


def _readme_setup_commands():
    text = (REPO / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_ci_runs_exactly_the_readme_commands():
    commands = _readme_setup_commands()
    assert len(commands) == 2, "the README's set-up is two commands: the main job and the tests"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")
          and not line.startswith(("set ", "cd "))]
    assert ci == commands


def test_setup_installs_into_a_git_ignored_venv():
    """Debian 12's Python refuses `pip install` outside a virtual environment (PEP 668): setup.sh makes .venv,
    pip runs only inside it, and the README's commands use its tools."""
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "python3 -m venv .venv" in setup
    pip_lines = [line for line in setup.splitlines() if "pip install" in line and not line.startswith("#")]
    assert pip_lines and all(line.startswith(".venv/bin/python -m pip install") for line in pip_lines)
    demo, tests = _readme_setup_commands()
    assert "xvfb-run -a .venv/bin/napari-landmarks demo" in demo
    assert tests.startswith(".venv/bin/python -m pytest")
    assert ".venv/" in (REPO / ".gitignore").read_text().splitlines()


def test_every_library_checked_has_its_package_in_the_apt_list():
    apt = {line.strip() for line in (REPO / "scripts" / "apt-packages.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")}
    assert set(_system.QT_XCB_LIBRARIES.values()) <= apt
    assert {"xvfb", "xauth", "libgl1-mesa-dri", "x11-utils", "python3-venv"} <= apt
    assert "apt-packages.txt" in (REPO / "scripts" / "setup.sh").read_text()


def test_a_missing_library_is_named_by_its_package(monkeypatch):
    import ctypes

    real = ctypes.CDLL

    def fake(name, *a, **k):
        if name == "libxcb-icccm.so.4":
            raise OSError(f"{name}: cannot open shared object file")
        return real(name, *a, **k)

    monkeypatch.setattr(ctypes, "CDLL", fake)
    monkeypatch.setattr(_system.sys, "platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert _system.missing_qt_packages() == ["libxcb-icccm4"]
    hint = _system.qt_setup_hint(["libxcb-icccm4"])
    assert "libxcb-icccm4" in hint and "apt-get install" in hint and "xcb-cursor0" not in hint


def test_demo_refuses_in_one_line_when_libraries_are_missing(monkeypatch, capsys):
    from napari_interactive_landmarks import cli

    monkeypatch.setattr(_system, "missing_qt_packages", lambda: ["libxcb-keysyms1"])
    assert cli.main(["demo", "--screenshot", "never.png"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libxcb-keysyms1" in err[0]
