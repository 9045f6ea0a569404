"""A study: a folder (or a list) of films annotated one after another, each change saved at once, resumable.

Headless (no napari, no Qt): the widget's dataset mode and the console's ``landmarks.study`` drive the same object.

The study's **annotation store** is a folder (by default ``<study folder>/.landmarks-study``) holding

- ``study.json``: the list of films in their order, each with its status (not opened / in progress with *n* points
  corrected / reviewed / skipped with the reason), the model that annotated it, and the film the user was on;
- ``films/<name>.landmarks.json``: each opened film's landmarks in the project's landmark file format
  (``docs/data-format.md``), every point with its pinned flag (placed by a person) — written after every change;
- ``*.bak``: the last good copy of each file, kept when a newer one replaces it;
- ``study.lock``: held (an OS file lock, released when the process ends, even when it is killed) by the one
  :class:`Study` that may write; a second one on the same store opens read-only and says why.

Every write goes to a temporary file that then replaces the target in one step (``io.files``): a crash or a killed
process leaves the last complete version, so at most the change in flight is lost. A store file that cannot be read
(edited by hand, truncated) is refused with the reason and never overwritten; ``Study.open(..., recover=True)`` sets
it aside (``*.corrupt-<time>``) and continues from its last good copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .io.files import replaced_atomically

__all__ = ["Study", "StudyError", "StudyStoreError", "StudyReadOnlyError", "FilmEntry", "STORE_DIR"]

STORE_DIR = ".landmarks-study"
STUDY_SCHEMA = "napari-interactive-landmarks/study/v1"
STATUSES = ("not opened", "in progress", "reviewed", "skipped")


class StudyError(RuntimeError):
    """Something about a study the user must know (one line, names the film or file); ``reason`` is the part
    that is not the film's name (what its status says when it is skipped)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class StudyStoreError(StudyError):
    """The annotation store cannot be read (edited by hand, truncated, another program's file): nothing was
    overwritten; the message says which file, why, and where its last good copy is."""


class StudyReadOnlyError(StudyError):
    """A write to a study opened read-only (another viewer holds it)."""


@dataclass
class FilmEntry:
    """One film of a study, as ``study.json`` lists it."""

    path: str  # relative to the study folder (absolute for a film outside it)
    status: str = "not opened"  # one of STATUSES
    corrected: int = 0  # points placed by a person
    model: str | None = None
    landmark_set: str | None = None
    reason: str | None = None  # why it is skipped
    updated: str | None = None  # ISO time of the last save

    @property
    def reviewed(self) -> bool:
        return self.status == "reviewed"

    def describe(self) -> str:
        if self.status == "in progress":
            return f"in progress: {self.corrected} point{'s' if self.corrected != 1 else ''} corrected"
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        if self.status == "reviewed":
            return f"reviewed ({self.corrected} corrected)"
        return self.status


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _write_atomically(path: Path, text: str, keep_backup: bool = True) -> None:
    """``path`` replaced by ``text`` in one step; its previous content, when it was readable, kept as ``.bak``
    (hard link, then the replace: at every moment either the old or the new file is complete)."""
    backup = path.with_name(path.name + ".bak")
    with replaced_atomically(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_backup and path.is_file():
            try:
                if backup.exists():
                    backup.unlink()
                os.link(path, backup)
            except OSError:  # a file system without hard links: a copy
                shutil.copy2(path, backup)


def film_key(rel: str) -> str:
    """A store file name for a film: its path made safe, and a short hash so that two paths cannot meet."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in rel)[-80:]
    return f"{safe}-{hashlib.sha1(rel.encode('utf-8')).hexdigest()[:8]}"


def _find_films(root: Path, store: Path) -> list[Path]:
    from .io.images import IMAGE_EXTENSIONS

    out = []
    for f in sorted(root.rglob("*")):
        if store in f.parents or any(part.startswith(".") for part in f.relative_to(root).parts):
            continue
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(f)
    return out


class Study:
    """A study of films: :meth:`open` it, :meth:`open_film` one (a :class:`LandmarkSession` whose every change is
    saved to the store), :meth:`mark_reviewed`, :meth:`next` / :meth:`previous`, :meth:`export`, :meth:`close`."""

    def __init__(self, root: Path | None, films: list[FilmEntry], store: Path, *, model: str | None = None,
                 read_only_reason: str | None = None, lock=None, notes: list[str] | None = None):
        self.root = root
        self.films = films
        self.store = store
        self.model = model  # one model for every film; None: each film gets the model that fits it
        self.read_only_reason = read_only_reason
        self._lock = lock
        self.notes = list(notes or [])  # what open() found worth saying (recovered files, new or missing films)
        self.current: int | None = None
        self.session = None  # the open film's LandmarkSession
        self.image: np.ndarray | None = None  # its pixels, as read (for a viewer to show)
        self._predictors: dict = {}
        self._background_predictors: dict = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-prefetch")
        self._prefetched: dict[int, Future] = {}
        self._io = threading.RLock()
        self._closed = False  # after close(): nothing more is written (the lock is released)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, source, store=None, *, model: str | None = None, recover: bool = False) -> "Study":
        """A study of the films under folder ``source`` (searched recursively; hidden folders and the store left
        out) or of the image files listed in ``source`` (then ``store`` is required). Its store is created on first
        use; an existing one is read and the study resumes where it was left (new films are appended, films no
        longer there are listed as skipped). Raises :class:`StudyStoreError` for a store that cannot be read
        (``recover=True``: set it aside, continue from its last good copy)."""
        if isinstance(source, (str, os.PathLike)):
            root = Path(source)
            if not root.is_dir():
                raise StudyError(f"{root}: not a folder (give a folder of films, or a list of image files)")
            store = Path(store) if store is not None else root / STORE_DIR
            paths = _find_films(root, store)
            if not paths:
                raise StudyError(f"{root}: no films found (PNG, JPEG, TIFF, BMP or DICOM, searched recursively)")
        else:
            paths = [Path(p) for p in source]
            if store is None:
                raise StudyError("a study of a list of files needs a store folder (store=...)")
            if not paths:
                raise StudyError("the list of films is empty")
            root = None
            store = Path(store)
        store.mkdir(parents=True, exist_ok=True)
        (store / "films").mkdir(exist_ok=True)
        lock, read_only = cls._take_lock(store)
        notes: list[str] = []
        try:
            saved, current = cls._read_index(store, recover, notes)
        except Exception:
            if lock is not None:
                lock.release()
            raise
        rels = [cls._rel(p, root) for p in paths]
        by_path = {f.path: f for f in saved}
        films = [by_path.get(r) or FilmEntry(r) for r in rels]
        new = [r for r in rels if r not in by_path]
        if saved and new:
            notes.append(f"{len(new)} new film(s) added to the study (e.g. {new[0]})")
        gone = [f for f in saved if f.path not in set(rels)]
        for f in gone:  # listed, not forgotten: their annotations stay in the store
            f.status, f.reason = "skipped", "the file is no longer there"
            films.append(f)
        if gone:
            notes.append(f"{len(gone)} film(s) of the study are no longer there (e.g. {gone[0].path}); their "
                         f"annotations are kept in the store")
        for f in films:  # a zero-byte file: listed as skipped, the rest go on
            p = Path(f.path) if root is None or Path(f.path).is_absolute() else root / f.path
            if p.is_file() and p.stat().st_size == 0 and f.status != "skipped":
                f.status, f.reason = "skipped", "the file is empty (0 bytes)"
        study = cls(root, films, store, model=model, read_only_reason=read_only, lock=lock, notes=notes)
        study.current = current if current is not None and 0 <= current < len(films) else None
        if read_only is None:
            study._write_index()
        return study

    @staticmethod
    def _rel(p: Path, root: Path | None) -> str:
        if root is not None:
            try:
                return p.relative_to(root).as_posix()
            except ValueError:
                pass
        return str(p.resolve())

    @staticmethod
    def _take_lock(store: Path):
        from filelock import FileLock, Timeout

        lock = FileLock(str(store / "study.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None, ("another viewer or process has this study open: opened read-only (nothing you change "
                          "here is saved)")
        except OSError as exc:
            return None, f"the study's store cannot be locked ({exc.strerror or exc}): opened read-only"
        return lock, None

    @staticmethod
    def _read_json(path: Path, what: str, recover: bool, notes: list[str]):
        """The parsed content of a store file; None when absent. A file that does not parse is refused (or, with
        ``recover``, set aside and its ``.bak`` used)."""
        backup = path.with_name(path.name + ".bak")
        if not path.exists():
            if backup.is_file():  # a crash between the two steps of a replace: the last good copy
                notes.append(f"{path.name} was missing; continued from its last good copy {backup.name}")
                return json.loads(backup.read_text(encoding="utf-8"))
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = getattr(exc, "msg", None) or str(exc)
            if not recover:
                last = f"; its last good copy is {backup}" if backup.is_file() else "; there is no earlier copy"
                raise StudyStoreError(
                    f"{path}: the {what} cannot be read ({why}); it was not changed{last}. Repair it, or open the "
                    f"study with recover=True (--recover) to set it aside and continue from the last good copy"
                ) from None
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            notes.append(f"{path.name} could not be read ({why}): set aside as {aside.name}")
            if backup.is_file():
                shutil.copy2(backup, path)
                notes.append(f"continued from its last good copy {backup.name}")
                return json.loads(path.read_text(encoding="utf-8"))
            return None

    @classmethod
    def _read_index(cls, store: Path, recover: bool, notes: list[str]):
        path = store / "study.json"
        data = cls._read_json(path, "study index", recover, notes)
        if data is None:
            return [], None
        try:
            if data.get("schema") != STUDY_SCHEMA:
                raise ValueError(f"its schema is {data.get('schema')!r}, not {STUDY_SCHEMA!r}")
            films = []
            for i, f in enumerate(data["films"]):
                entry = FilmEntry(**{k: f.get(k) for k in FilmEntry.__dataclass_fields__ if k in f})
                if not isinstance(entry.path, str) or entry.status not in STATUSES:
                    raise ValueError(f"film {i} has no path or an unknown status {entry.status!r}")
                entry.corrected = int(entry.corrected or 0)
                films.append(entry)
            current = data.get("current")
            current = None if current is None else int(current)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            backup = path.with_name(path.name + ".bak")
            last = f"; its last good copy is {backup}" if backup.is_file() else ""
            raise StudyStoreError(f"{path}: the study index is malformed ({exc}); it was not changed{last}") from None
        return films, current

    # ------------------------------------------------------------------ the store
    @property
    def read_only(self) -> bool:
        return self.read_only_reason is not None

    def _need_writable(self) -> None:
        if self.read_only:
            raise StudyReadOnlyError(self.read_only_reason)

    def _write_index(self) -> None:
        self._need_writable()
        data = {"schema": STUDY_SCHEMA, "root": None if self.root is None else str(self.root.resolve()),
                "current": self.current, "updated": _now(), "films": [asdict(f) for f in self.films]}
        with self._io:
            _write_atomically(self.store / "study.json", json.dumps(data, indent=1))

    def film_path(self, i: int) -> Path:
        p = Path(self.films[i].path)
        return p if self.root is None or p.is_absolute() else self.root / p

    def annotation_path(self, i: int) -> Path:
        return self.store / "films" / f"{film_key(self.films[i].path)}.landmarks.json"

    def status_counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for f in self.films:
            out[f.status] += 1
        return out

    def describe(self) -> str:
        c = self.status_counts()
        return (f"{len(self.films)} films: {c['reviewed']} reviewed, {c['in progress']} in progress, "
                f"{c['not opened']} not opened, {c['skipped']} skipped")

    # ------------------------------------------------------------------ models
    def predictor_for(self, i: int, image_shape, background: bool = False):
        """The predictor for film ``i`` (the study's model, or the shipped model that fits the film); raises
        :class:`StudyError` with the reason when none fits. ``background``: the instance of the prefetch thread — a
        predictor is not shared between threads (an ensemble's active members, its per-film caches)."""
        from .inference import Predictor
        from .model_choice import choose_model_for_image, misfit_reason
        from .weights import load_manifest

        manifest = load_manifest()
        name = self.model or self.films[i].model or choose_model_for_image(manifest, image_shape, synthetic=False)
        if name is None:
            raise StudyError("no model available for this film")
        if name in manifest:
            why = misfit_reason(name, manifest[name], image_shape, image_name=Path(self.films[i].path).name)
            if why and self.model is None:
                raise StudyError(why)
        pool = self._background_predictors if background else self._predictors
        with self._io:
            if name not in pool:
                pred = Predictor.from_name(name) if name in manifest else Predictor.from_file(name)
                pred.set_precision("auto")  # bf16 where this CPU computes it natively, as the viewer does
                pool[name] = pred
            return pool[name]

    # ------------------------------------------------------------------ films
    def _detect(self, i: int, background: bool = False):
        """Film ``i`` read, its model chosen, and its landmarks: from the store when it was opened before, else
        detected. Returns (its LandmarkSession, not yet subscribed to the store; the film's pixels). Runs in the
        prefetch thread too."""
        from .inference.session import LandmarkSession
        from .io.images import ImageError, read_image

        path = self.film_path(i)
        try:
            img = read_image(path)
        except (ImageError, OSError) as exc:
            why = str(exc).replace(f"{path}: ", "").replace(str(path), self.films[i].path)
            raise StudyError(f"{self.films[i].path}: {why}", why) from None
        try:
            pred = self.predictor_for(i, img.array.shape[:2], background)
        except StudyError as exc:
            raise StudyError(f"{self.films[i].path}: {exc}", str(exc)) from None
        session = LandmarkSession(pred, img.array, spacing=img.spacing, image_path=path)
        saved = self.annotation_path(i)
        if saved.is_file() or saved.with_name(saved.name + ".bak").is_file():
            if not saved.is_file():  # a crash between the two steps of a replace
                shutil.copy2(saved.with_name(saved.name + ".bak"), saved)
            try:
                session.load(saved)
            except Exception as exc:
                backup = saved.with_name(saved.name + ".bak")
                last = f"; its last good copy is {backup}" if backup.is_file() else ""
                raise StudyStoreError(f"{saved}: the saved landmarks of {self.films[i].path} cannot be used "
                                      f"({exc}); nothing was overwritten{last}") from None
            session._dirty = False
        else:
            session.detect()
        return session, img.array

    def prefetch(self, i: int | None) -> None:
        """Start reading and detecting film ``i`` in the background (the next one while the user works on this)."""
        if i is None or i in self._prefetched or not 0 <= i < len(self.films) or self.films[i].status == "skipped":
            return
        self._prefetched[i] = self._pool.submit(self._detect, i, True)

    def open_film(self, i: int):
        """Make film ``i`` the current one and return its :class:`LandmarkSession`, with its saved landmarks (or
        detected ones); from now on every change to it is written to the store at once. A film that cannot be
        read, or that no model fits, is marked skipped with the reason and :class:`StudyError` says it."""
        if not 0 <= i < len(self.films):
            raise StudyError(f"there is no film {i + 1} (the study has {len(self.films)})")
        entry = self.films[i]
        if entry.status == "skipped" and entry.reason == "the file is no longer there":
            raise StudyError(f"{entry.path}: {entry.reason}")
        # the film on screen stays subscribed (its changes saved) until the new one is ready to take its place
        fut = self._prefetched.pop(i, None)
        try:
            session, self.image = fut.result() if fut is not None else self._detect(i)
            if fut is not None:  # from now on the foreground's instance of the same model answers its corrections
                session.predictor = self.predictor_for(i, session.image_shape)
        except StudyStoreError:
            raise
        except StudyError as exc:
            entry.status, entry.reason = "skipped", exc.reason
            if not self.read_only:
                self._write_index()
            raise
        with self._io:
            self._leave()
            self.current, self.session = i, session
            entry.model, entry.landmark_set = session.predictor.name, session.schema.name
            if entry.status in ("not opened", "skipped"):
                entry.status, entry.reason = "in progress", None
            entry.corrected = int(session.pinned.sum())
            if not self.read_only:
                if not self.annotation_path(i).is_file():
                    self._save_film(i, session)
                self._write_index()
            # each session saves to its own film, whichever film is current when a late change arrives
            session.subscribe(lambda change, i=i, s=session: self._on_change(change, i, s))
        return session

    def _leave(self) -> None:
        """The open film is no longer the current one. Its session stays subscribed: a change that still reaches
        it (a drag on its layers before the viewer shows the next film) is saved to its own file; a session no
        longer used is collected with its subscription."""
        self.session = None

    def _on_change(self, change: str, i: int, session) -> None:
        if change == "image" or self.read_only or self._closed:
            return
        with self._io:
            self._save_film(i, session)
            entry = self.films[i]
            corrected = int(session.pinned.sum())
            if corrected != entry.corrected or entry.status == "not opened":
                entry.corrected = corrected
                self._write_index()

    def _save_current(self) -> None:
        """The open film's landmarks written to the store now."""
        if self.session is not None:
            self._save_film(self.current, self.session)

    def _save_film(self, i: int, s) -> None:
        """Session ``s``'s landmarks written to film ``i``'s file now (atomic; the previous version kept as .bak)."""
        self._need_writable()
        if s is None or not s.detected:
            return
        path = self.annotation_path(i)
        with self._io:
            if path.is_file():
                backup = path.with_name(path.name + ".bak")
                if backup.exists():
                    backup.unlink()
                os.link(path, backup)
            s.save(path, overwrite=True)
        self.films[i].updated = _now()

    def save(self) -> None:
        """Write the open film and the index now (every change is written anyway; for scripts that edit the
        session's state by other means)."""
        self._need_writable()
        self._save_current()
        self._write_index()

    def mark_reviewed(self, reviewed: bool = True, i: int | None = None) -> None:
        """Mark film ``i`` (default: the open one) reviewed — done — or back in progress."""
        self._need_writable()
        i = self.current if i is None else i
        if i is None:
            raise StudyError("no film is open")
        entry = self.films[i]
        if entry.status == "skipped":
            raise StudyError(f"{entry.path} is skipped ({entry.reason}); it cannot be reviewed")
        if i == self.current:
            self._save_current()
        elif not self.annotation_path(i).is_file():
            raise StudyError(f"{entry.path} has not been opened yet; open it before marking it reviewed")
        entry.status = "reviewed" if reviewed else "in progress"
        entry.updated = _now()
        self._write_index()

    def _step(self, start: int, step: int) -> int | None:
        i = start + step
        while 0 <= i < len(self.films):
            if self.films[i].status != "skipped":
                return i
            i += step
        return None

    def next_index(self, step: int = 1) -> int | None:
        """The next (``step`` 1) or previous (−1) film that is not skipped, from the open one."""
        start = self.current if self.current is not None else (-1 if step > 0 else len(self.films))
        return self._step(start, step)

    def resume_index(self) -> int | None:
        """Where to resume: the film the user was on, else the first not reviewed."""
        if self.current is not None and self.films[self.current].status != "skipped":
            return self.current
        for i, f in enumerate(self.films):
            if f.status in ("not opened", "in progress"):
                return i
        return None

    def next(self):
        """Open the next film that can be opened (a skipped one is passed over, its reason kept); prefetch the one
        after. Returns its session, or None at the end of the study."""
        return self._walk(1)

    def previous(self):
        return self._walk(-1)

    def _walk(self, step: int):
        i = self.next_index(step)
        while i is not None:
            try:
                session = self.open_film(i)
            except StudyStoreError:
                raise
            except StudyError as exc:
                self.notes.append(str(exc))
                i = self._step(i, step)
                continue
            self.prefetch(self.next_index(step))
            return session
        return None

    def reviewed_films(self) -> list[int]:
        return [i for i, f in enumerate(self.films) if f.status == "reviewed"]

    # ------------------------------------------------------------------ exports
    def export(self, out, formats: Iterable[str] = ("generic", "csv", "coco"), *, include: str = "reviewed",
               copy_images: bool = False, overwrite: bool = False) -> dict[str, list[Path]]:
        """Write the study's films (``include``: "reviewed" — the default — or "opened": every film with saved
        landmarks) into folder ``out`` in each of ``formats``; see :mod:`.io.exports`. Returns {format: [paths]}."""
        from .io.exports import export_films

        if include not in ("reviewed", "opened"):
            raise StudyError(f"include must be 'reviewed' or 'opened', not {include!r}")
        chosen = [i for i, f in enumerate(self.films)
                  if (f.status == "reviewed" if include == "reviewed" else f.status in ("reviewed", "in progress"))
                  and self.annotation_path(i).is_file()]
        if not chosen:
            raise StudyError(f"no {'reviewed' if include == 'reviewed' else 'opened'} films to export "
                             f"({self.describe()})")
        films = [(self.film_path(i), self.films[i].path, self.annotation_path(i)) for i in chosen]
        return export_films(films, out, formats=formats, copy_images=copy_images, overwrite=overwrite)

    # ------------------------------------------------------------------ adapting the model to the study
    def adapt(self, out=None, *, on_progress=None, **finetune_args):
        """Fine-tune the model of the reviewed films on them (``finetune.finetune``; a fifth held aside to measure
        it) and return its :class:`~napari_interactive_landmarks.finetune.FinetuneReport`; the adapted weights go
        to ``out`` (default ``<store>/models/<model>-adapted-<date>.safetensors``). :meth:`use_model` then switches
        the study to it. Refused with the number needed when too few films are reviewed."""
        from .finetune import MIN_FILMS, finetune

        self._need_writable()
        reviewed = self.reviewed_films()
        models = sorted({self.films[i].model for i in reviewed if self.films[i].model})
        if len(reviewed) < MIN_FILMS:
            raise StudyError(f"adapting the model needs at least {MIN_FILMS} reviewed films; {len(reviewed)} "
                             f"{'is' if len(reviewed) == 1 else 'are'} reviewed")
        if len(models) != 1:
            raise StudyError(f"the reviewed films were annotated with {len(models)} models ({', '.join(models)}): "
                             "open the study with one model to adapt it")
        base = self.model or models[0]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        data = self.store / "adapt" / stamp
        self.export(data, formats=("generic",), include="reviewed")
        (folder,) = [p for p in data.iterdir() if p.is_dir()]
        out = Path(out) if out is not None else self.store / "models" / f"{Path(base).stem}-adapted-{stamp}.safetensors"
        return finetune(base, folder, out, on_progress=on_progress, progress=False, **finetune_args)

    def use_model(self, weights) -> None:
        """Answer every film opened from now on with the model in ``weights`` (e.g. what :meth:`adapt` wrote);
        the films' saved points are kept."""
        from .inference import Predictor

        Predictor.from_file(weights)  # refused here, with the reason, before anything changes
        self.model = str(weights)
        self._predictors.clear()
        self._background_predictors.clear()
        for fut in self._prefetched.values():
            fut.cancel()
        self._prefetched.clear()

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Write what is open, stop the background detection and release the store's lock."""
        try:
            if not self.read_only and self.session is not None and self.session.detected:
                self.save()
        finally:
            self._closed = True
            self._leave()
            for fut in self._prefetched.values():
                fut.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        where = self.root if self.root is not None else self.store
        ro = ", read-only" if self.read_only else ""
        return f"<Study {where}: {self.describe()}{ro}>"

