"""Writing a file whole or not at all, and several files all or none.

Errors of a save are :class:`SaveError` (an ``OSError``): its message names the file the caller asked for —
never a temporary — and when it is raised nothing was written (no target created or replaced, no temporary
left behind). A target that exists without ``overwrite`` is a :class:`SaveExistsError`, which is also a
``FileExistsError``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path


class SaveError(OSError):
    """A file could not be saved; the message names the target. Nothing was written. ``target`` is its path."""

    def __init__(self, message: str, target=None):
        super().__init__(message)
        self.target = None if target is None else Path(target)


class SaveExistsError(SaveError, FileExistsError):
    """A target exists and overwriting was not asked for (found before anything was written)."""


@contextmanager
def replaced_atomically(path, suffix: str = ".tmp"):
    """Yield a temporary path in ``path``'s folder to write to; when the block succeeds it replaces ``path`` in one
    step (with the permissions an ordinary new file gets), when it fails it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_targets(paths, overwrite: bool = False) -> list[Path]:
    """Check every target before anything is written: not a folder, its folder exists and is writable, and it
    does not exist unless ``overwrite``. Raises :class:`SaveError` / :class:`SaveExistsError` naming it."""
    out = [Path(p) for p in paths]
    for p in out:
        if p.is_dir():
            raise SaveError(f"cannot save {p}: it is a folder; give a file name", p)
        if not p.parent.is_dir():
            raise SaveError(f"cannot save {p}: the folder {p.parent} does not exist", p)
        if p.exists() and not overwrite:
            raise SaveExistsError(f"{p}: file already exists; not overwriting it (pass overwrite=True to replace it)", p)
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise SaveError(f"cannot save {p}: the folder {p.parent} is not writable", p)
    return out


@contextmanager
def replaced_together(paths, *, overwrite: bool = False):
    """All of ``paths`` or none: every target is checked first (:func:`check_targets`), then the block gets one
    temporary path per target (:func:`replaced_atomically`) to write; only when every one is written do they
    replace their targets. On failure the temporaries are removed, no target is touched, and an ``OSError``
    becomes a :class:`SaveError` naming the target that could not be written."""
    targets = check_targets(paths, overwrite)
    tmps: list[Path] = []
    current = None
    try:
        with ExitStack() as stack:
            for t in targets:
                current = t
                tmps.append(Path(stack.enter_context(replaced_atomically(t))))
            current = None
            yield tmps
    except SaveError:
        raise
    except OSError as exc:
        target = current or _target_of(exc, targets, tmps)
        what = target if target is not None else " and ".join(str(t) for t in targets)
        raise SaveError(f"cannot save {what}: {exc.strerror or exc}", target) from None


def _target_of(exc: OSError, targets, tmps):
    name = exc.filename or exc.filename2
    for t, tmp in zip(targets, tmps):
        if name is not None and os.fspath(name) in (os.fspath(t), os.fspath(tmp)):
            return t
    return targets[0] if len(targets) == 1 else None


def write_texts(texts: dict, *, overwrite: bool = False) -> list[Path]:
    """Write ``{path: text}`` (UTF-8) all or none (:func:`replaced_together`); returns the paths."""
    with replaced_together(list(texts), overwrite=overwrite) as tmps:
        for tmp, text in zip(tmps, texts.values()):
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
    return [Path(p) for p in texts]
