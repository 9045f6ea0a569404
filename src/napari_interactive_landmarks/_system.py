"""Which system libraries napari's Qt (xcb platform) and OpenGL need and are missing, by Debian package.

Qt aborts the whole process (no Python exception) when its xcb platform plugin cannot load a library, and its
message names ``xcb-cursor0`` whatever is actually missing. ``napari-landmarks demo`` and the test suite ask
here first and say which packages to install (``scripts/apt-packages.txt`` lists them all; ``scripts/setup.sh``
installs them).
"""

from __future__ import annotations

import ctypes
import os
import sys

#: shared library → the Debian/Ubuntu package that provides it (each package is in scripts/apt-packages.txt)
QT_XCB_LIBRARIES = {
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libXrender.so.1": "libxrender1",
    "libXi.so.6": "libxi6",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
}


def missing_qt_packages() -> list[str]:
    """Debian packages whose libraries Qt's xcb platform needs and the dynamic loader cannot find (Linux only;
    [] elsewhere, and when Qt is told to use another platform)."""
    if not sys.platform.startswith("linux"):
        return []
    if os.environ.get("QT_QPA_PLATFORM", "xcb").split(":")[0] not in ("xcb", ""):
        return []
    missing = []
    for soname, package in QT_XCB_LIBRARIES.items():
        try:
            ctypes.CDLL(soname)
        except OSError:
            if package not in missing:
                missing.append(package)
    return missing


def qt_setup_hint(missing: list[str]) -> str:
    """One message for missing system libraries: what is missing and the command that installs it."""
    return (f"Qt cannot start: missing system libraries ({', '.join(missing)}). Install them with "
            f"`sudo apt-get install -y {' '.join(missing)}`, or run `bash scripts/setup.sh`, which installs "
            "everything the README's set-up needs.")
