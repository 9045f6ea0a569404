"""Model weights: the manifest, fp16 safetensors files, hash checks, downloads of larger variants.

Shipped models are fp16 ``.safetensors`` files in the package ``weights/`` folder; larger variants
may have a ``url`` in the manifest and are fetched (with pooch) into a cache folder only when asked
for (``resolve_weights(name, download=True)`` or ``napari-landmarks weights fetch NAME``). Every file
is checked against the manifest's SHA-256 before use. Weights are never read with ``torch.load`` /
pickle.

The manifest (``weights_manifest.yaml``) maps model names to entries::

    models:
      aasce-spine:
        file: aasce-spine.safetensors
        sha256: <hex>
        size_bytes: <int>
        url: null
        description: ...
        schema: aasce-spine68
        config: {...}
        input_size: [512, 256]
        normalization: {...}
        morphology: {pairs: [[i, j], ...], triplets: [[a, v, b], ...]}
        temperatures: null
        training: {...}
        metrics: {...}

``torch``, ``safetensors`` and ``pooch`` are imported lazily so that listing models stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from .shape_model import TENSOR_PREFIX as SHAPE_MODEL_TENSOR_PREFIX

MANIFEST_ENV = "NAPARI_LANDMARKS_MANIFEST"
CACHE_ENV = "NAPARI_LANDMARKS_CACHE"

MANIFEST_NAME = "weights_manifest.yaml"
REQUIRED_KEYS = ("file", "sha256", "schema", "config", "input_size")
# Order in which entry keys are written by register_model (other keys follow).
ENTRY_KEY_ORDER = (
    "file",
    "sha256",
    "size_bytes",
    "url",
    "description",
    "schema",
    "config",
    "input_size",
    "normalization",
    "morphology",
    "temperatures",
    "training",
    "metrics",
)
# Metrics shown by cmd_list, first match wins (matched on the last dotted component).
KEY_METRICS = ("mre_mm", "mre_px", "mre", "smape", "sdr_2mm", "mean_radial_error", "pck", "nme")

_PACKAGE_DIR = Path(__file__).resolve().parent
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_DEFAULT_HEADER = (
    "# napari-interactive-landmarks weights manifest; see napari_interactive_landmarks/weights.py for the format.\n"
)


class WeightsError(RuntimeError):
    """A weights file or the weights manifest is missing, malformed or unusable."""


class WeightsHashError(WeightsError):
    """A weights file does not have the SHA-256 recorded in the manifest."""

    def __init__(self, path, expected: str, actual: str, name: str | None = None):
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        self.name = name
        model = f" for model '{name}'" if name else ""
        fetch = f"napari-landmarks weights fetch {name}" if name else "napari-landmarks weights fetch NAME"
        super().__init__(
            f"weights file {self.path}{model} is corrupt or not the expected file:\n"
            f"  expected sha256 {expected}\n"
            f"  actual   sha256 {actual}\n"
            f"Delete it and re-fetch it with `{fetch}` (or reinstall the package for shipped weights); "
            f"if you replaced the file on purpose, it is for a different model than the manifest entry."
        )


# --------------------------------------------------------------------------- paths


def manifest_path() -> Path:
    """Path of the weights manifest: ``$NAPARI_LANDMARKS_MANIFEST`` if set, else the packaged one."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env).expanduser()
    packaged = _PACKAGE_DIR / MANIFEST_NAME
    if packaged.exists():
        return packaged
    repo_root = _PACKAGE_DIR.parents[1] / MANIFEST_NAME  # source checkout with a broken symlink
    if repo_root.is_file():
        return repo_root
    return packaged


_default_manifest_path = manifest_path  # register_model's argument shadows the function name


def weights_dir() -> Path:
    """The package folder holding shipped ``.safetensors`` files (may not exist)."""
    return _PACKAGE_DIR / "weights"


def cache_dir() -> Path:
    """Download cache folder: ``$NAPARI_LANDMARKS_CACHE`` if set, else pooch's per-user cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-interactive-landmarks"))


# --------------------------------------------------------------------------- manifest


def _entry_errors(name: str, entry) -> list[str]:
    if not isinstance(entry, Mapping):
        return [f"model '{name}': entry must be a mapping, got {type(entry).__name__}"]
    errs = []
    missing = [k for k in REQUIRED_KEYS if k not in entry or entry[k] is None]
    if missing:
        errs.append(f"model '{name}': missing required field(s) {', '.join(missing)}")
    f = entry.get("file")
    if f is not None and (not isinstance(f, str) or not f.strip()):
        errs.append(f"model '{name}': 'file' must be a non-empty string")
    sha = entry.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA_RE.match(sha.lower())):
        errs.append(f"model '{name}': 'sha256' must be 64 hex characters, got {sha!r}")
    schema = entry.get("schema")
    if schema is not None and not isinstance(schema, (str, Mapping)):
        errs.append(f"model '{name}': 'schema' must be a schema name or an inline schema mapping")
    config = entry.get("config")
    if config is not None and not isinstance(config, Mapping):
        errs.append(f"model '{name}': 'config' must be a mapping")
    size = entry.get("input_size")
    if size is not None and not (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        errs.append(f"model '{name}': 'input_size' must be [H, W] positive integers, got {size!r}")
    nbytes = entry.get("size_bytes")
    if nbytes is not None and not (isinstance(nbytes, int) and not isinstance(nbytes, bool) and nbytes >= 0):
        errs.append(f"model '{name}': 'size_bytes' must be a non-negative integer, got {nbytes!r}")
    url = entry.get("url")
    if url is not None and not isinstance(url, str):
        errs.append(f"model '{name}': 'url' must be a string or null")
    temps = entry.get("temperatures")
    if temps is not None and not isinstance(temps, (list, tuple)):
        errs.append(f"model '{name}': 'temperatures' must be a list or null")
    return errs


def _read_manifest_raw(path: Path) -> tuple[str, dict]:
    """Return (text, parsed top-level mapping) of a manifest file, with clear errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = f" (set by ${MANIFEST_ENV})" if os.environ.get(MANIFEST_ENV) else ""
        raise WeightsError(f"weights manifest not found: {path}{hint}") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights manifest {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WeightsError(f"weights manifest {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WeightsError(f"weights manifest {path} must be a mapping with a 'models' key")
    models = data.get("models")
    if models is None:
        models = {}
    if not isinstance(models, dict):
        raise WeightsError(f"weights manifest {path}: 'models' must be a mapping of model name -> entry")
    data["models"] = models
    return text, data


def load_manifest(path=None) -> dict[str, dict]:
    """Load and validate a weights manifest; return ``{model name: entry dict}``.

    ``path`` defaults to :func:`manifest_path`. Each entry needs ``file``, ``sha256``, ``schema``,
    ``config`` and ``input_size``; all problems are reported together in one :class:`WeightsError`.
    """
    path = Path(path) if path is not None else manifest_path()
    _, data = _read_manifest_raw(path)
    errs = []
    out: dict[str, dict] = {}
    for name, entry in data["models"].items():
        e = _entry_errors(str(name), entry)
        errs.extend(e)
        if not e:
            entry = dict(entry)
            entry["sha256"] = entry["sha256"].lower()
            out[str(name)] = entry
    if errs:
        raise WeightsError(f"weights manifest {path} is invalid:\n  " + "\n  ".join(errs))
    return out


def _as_manifest(manifest) -> dict[str, dict]:
    if manifest is None:
        return load_manifest()
    if isinstance(manifest, (str, os.PathLike)):
        return load_manifest(manifest)
    if isinstance(manifest, Mapping):
        return dict(manifest)
    raise TypeError(f"manifest must be a dict, a path or None, got {type(manifest).__name__}")


def get_entry(name: str, manifest=None) -> dict:
    """The manifest entry of model ``name``.

    ``manifest`` is a loaded manifest dict, a manifest path, or None (the default manifest).
    Raises :class:`WeightsError` listing the available names when ``name`` is unknown.
    """
    models = _as_manifest(manifest)
    if name not in models:
        avail = ", ".join(sorted(models)) or "(none)"
        raise WeightsError(f"unknown model '{name}'; available models: {avail}")
    entry = models[name]
    errs = _entry_errors(name, entry)
    if errs:
        raise WeightsError("invalid manifest entry:\n  " + "\n  ".join(errs))
    return dict(entry)


# --------------------------------------------------------------------------- hashing


def sha256_file(path) -> str:
    """SHA-256 hex digest of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path, expected_sha256: str, *, name: str | None = None) -> Path:
    """Check ``path`` against ``expected_sha256``; raise :class:`WeightsHashError` on mismatch.

    The file is hashed every time, never answered from a cache: a cache keyed by the file's size and modification
    time accepted a file edited in place with both kept (``os.utime``), and no key from ``stat`` is trustworthy on
    every system (Windows reports the creation time as ``st_ctime``). Hashing costs about 5 ms for a 4 MB shipped
    model and 15 ms for 12 MB, under 1 % of loading the model (about 2 s on a 2-core CPU).
    """
    path = Path(path)
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        raise WeightsHashError(path, expected_sha256.lower(), actual, name=name)
    return path


# --------------------------------------------------------------------------- resolving files


def _candidates(entry: dict) -> tuple[Path | None, Path]:
    """(packaged path or None, cache path) where the entry's file may live."""
    f = Path(str(entry["file"])).expanduser()
    if f.is_absolute():
        return f, f
    return weights_dir() / f, cache_dir() / f


def _local_file(entry: dict) -> tuple[Path | None, str]:
    """The existing local copy of an entry's file and where it is ('local' or 'cached')."""
    packaged, cached = _candidates(entry)
    if packaged is not None and packaged.is_file():
        return packaged, "local"
    if cached.is_file():
        return cached, "cached"
    return None, "remote" if entry.get("url") else "missing"


def resolve_weights(name: str, *, download: bool = False, manifest=None) -> Path:
    """Path of model ``name``'s weights file, verified against the manifest SHA-256.

    Looks for the packaged file first, then the download cache. A missing file with a ``url`` is
    downloaded with pooch only when ``download=True``; otherwise a :class:`WeightsError` says how to
    fetch it. Raises :class:`WeightsHashError` when the file's hash does not match.
    """
    entry = get_entry(name, manifest)
    sha = entry["sha256"].lower()
    path, _ = _local_file(entry)
    if path is None:
        url = entry.get("url")
        _, target = _candidates(entry)
        if url and download:
            path = _download(name, url, sha, target)
        elif url:
            raise WeightsError(
                f"weights for model '{name}' are not downloaded (expected at {target}). "
                f"Fetch them with `napari-landmarks weights fetch {name}` "
                f"or resolve_weights('{name}', download=True) (source: {url})."
            )
        else:
            packaged, _ = _candidates(entry)
            raise WeightsError(
                f"weights file for model '{name}' is missing: {packaged} does not exist and the manifest "
                f"has no download url; the installation is incomplete - reinstall napari-interactive-landmarks."
            )
    return verify_file(path, sha, name=name)


def _download(name: str, url: str, sha: str, target: Path) -> Path:
    import pooch

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import tqdm  # noqa: F401

        progress = True
    except ImportError:
        progress = False
    try:
        got = pooch.retrieve(
            url, known_hash=f"sha256:{sha}", path=target.parent, fname=target.name, progressbar=progress
        )
    except ValueError as exc:  # pooch raises ValueError on a hash mismatch
        raise WeightsError(
            f"download of model '{name}' from {url} did not match the manifest sha256 {sha}: {exc}. "
            f"The remote file is for a different model version; update the package or the manifest."
        ) from None
    except Exception as exc:
        raise WeightsError(f"could not download weights for model '{name}' from {url}: {exc}") from exc
    return Path(got)


# --------------------------------------------------------------------------- safetensors I/O


# tensors kept in float32 whatever ``dtype``: the shape model's covariance (normalised coordinates) has entries of
# 1e-6-1e-3, where float16 keeps 3 significant digits and is subnormal below 6e-5; conditioning on it needs more
KEEP_FLOAT32_PREFIXES = (SHAPE_MODEL_TENSOR_PREFIX,)


def save_weights(state_dict, path, *, metadata: dict[str, str] | None = None, dtype=None) -> Path:
    """Write a state dict as a safetensors file.

    Floating-point tensors are cast to ``dtype`` (default ``torch.float16``), except those named with a prefix of
    :data:`KEEP_FLOAT32_PREFIXES` (float32); integer buffers (e.g. BatchNorm ``num_batches_tracked``) are kept as
    they are. ``metadata`` values that are not strings are JSON-encoded. The file is written atomically.
    """
    import torch
    from safetensors.torch import save_file

    dtype = torch.float16 if dtype is None else dtype
    tensors = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state_dict['{k}'] is a {type(v).__name__}, not a tensor")
        t = v.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.float32 if str(k).startswith(KEEP_FLOAT32_PREFIXES) else dtype)
        tensors[str(k)] = t.contiguous().clone()
    meta = None
    if metadata:
        meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    from .io.files import replaced_atomically

    path = Path(path)
    with replaced_atomically(path) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return path


def load_weights(path) -> tuple[dict, dict]:
    """Read a safetensors file; return ``(state_dict, metadata)``.

    Floating-point tensors are returned as float32, others unchanged. Never uses pickle.
    Raises :class:`WeightsError` for a missing, truncated or non-safetensors file, and for one whose tensors
    hold NaN or infinite values (a model built from them returns NaN for every landmark).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            sd = {}
            for k in f.keys():
                t = f.get_tensor(k)
                sd[k] = t.float() if t.is_floating_point() else t
    except Exception as exc:
        raise WeightsError(f"{path} is not a safetensors file (or is truncated/corrupt): {exc}") from None
    bad = [k for k, t in sd.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise WeightsError(f"{path} is corrupt: tensor '{bad[0]}'{more} holds NaN or infinite values; "
                           f"download or export the weights again")
    return sd, metadata


# --------------------------------------------------------------------------- writing the manifest


class _ManifestDumper(yaml.SafeDumper):
    """SafeDumper writing lists of scalars in flow style ([1, 2]) and everything else in block style."""


def _represent_list(dumper, data):
    flow = all(isinstance(v, (int, float, str, bool)) or v is None for v in data) and len(data) <= 128
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ManifestDumper.add_representer(list, _represent_list)


def _plain(obj):
    """Convert tuples, numpy scalars/arrays, Paths and tensors into YAML-safe Python objects."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return _plain(obj.tolist())
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} into the weights manifest")


def _header(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#") or not line.strip():
            lines.append(line)
        else:
            break
    head = "".join(lines).rstrip("\n")
    return head + "\n" if head else ""


def register_model(name: str, entry: dict, weights_file, manifest_path=None) -> dict:
    """Add or replace model ``name`` in the manifest, with ``sha256``/``size_bytes`` from ``weights_file``.

    ``entry["file"]`` defaults to the weights file's name. The manifest's leading comment block and
    other entries are kept; a missing manifest is created. Returns the entry as written.
    """
    weights_file = Path(weights_file)
    if not weights_file.is_file():
        raise WeightsError(f"weights file not found: {weights_file}")
    path = Path(manifest_path) if manifest_path is not None else _default_manifest_path()
    path = path.resolve()  # write through the package symlink to the canonical file
    if path.exists():
        text, data = _read_manifest_raw(path)
        header = _header(text)
    else:
        data, header = {"models": {}}, _DEFAULT_HEADER

    new = _plain(dict(entry))
    new.setdefault("file", weights_file.name)
    new["sha256"] = sha256_file(weights_file)
    new["size_bytes"] = weights_file.stat().st_size
    ordered = {k: new[k] for k in ENTRY_KEY_ORDER if k in new}
    ordered.update({k: v for k, v in new.items() if k not in ordered})
    errs = _entry_errors(name, ordered)
    if errs:
        raise WeightsError("cannot register model:\n  " + "\n  ".join(errs))

    data["models"][str(name)] = ordered
    _write_manifest(path, header, data)
    return ordered


def unregister_model(name: str, manifest_path=None, delete_file: bool = False) -> Path | None:
    """Remove model ``name`` from the manifest (e.g. an experiment that was not better). With
    ``delete_file`` its weights file in the package folder is deleted too (a cached download is left alone).
    Returns the weights file's path when it was deleted."""
    path = (Path(manifest_path) if manifest_path is not None else _default_manifest_path()).resolve()
    text, data = _read_manifest_raw(path)
    if name not in data.get("models", {}):
        raise WeightsError(f"no model '{name}' in {path.name}; known: {', '.join(data.get('models', {}))}")
    entry = data["models"].pop(name)
    _write_manifest(path, _header(text), data)
    target = weights_dir() / entry.get("file", "")
    if delete_file and not entry.get("url") and target.is_file():
        target.unlink()
        return target
    return None


def _write_manifest(path: Path, header: str, data: dict) -> None:
    body = yaml.dump(data, Dumper=_ManifestDumper, sort_keys=False, allow_unicode=True, width=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(header + body)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- CLI helpers


def _num_landmarks(schema) -> int | None:
    try:
        if isinstance(schema, Mapping):
            return len(schema["landmarks"])
        from .schemas import load_schema

        return load_schema(schema).num_landmarks
    except Exception:
        return None


def _flatten(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _key_metric(metrics) -> str:
    if not isinstance(metrics, Mapping) or not metrics:
        return "-"
    flat = [(k, v) for k, v in _flatten(metrics) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not flat:
        return "-"
    for want in KEY_METRICS:
        for k, v in flat:
            if k.rsplit(".", 1)[-1].lower() == want:
                return f"{k}={v:.4g}"
    k, v = flat[0]
    return f"{k}={v:.4g}"


def cmd_list(manifest=None) -> str:
    """A text table of the manifest's models: name, schema, landmarks, input size, size, status, metric.

    Status is ``local`` (packaged), ``cached`` (downloaded), ``remote`` (url, not downloaded) or
    ``missing``.
    """
    models = _as_manifest(manifest)
    if not models:
        return f"no models in the weights manifest ({manifest_path() if manifest is None else manifest})"
    header = ("name", "schema", "landmarks", "input", "size MB", "status", "metric")
    rows = []
    for name, e in models.items():
        schema = e.get("schema")
        schema_name = schema.get("name", "(inline)") if isinstance(schema, Mapping) else str(schema)
        k = _num_landmarks(schema)
        size = e.get("input_size") or ["?", "?"]
        nbytes = e.get("size_bytes")
        _, status = _local_file(e)
        rows.append(
            (
                name,
                schema_name,
                str(k) if k is not None else "?",
                f"{size[0]}x{size[1]}",
                f"{nbytes / 1e6:.1f}" if isinstance(nbytes, int) else "?",
                status,
                _key_metric(e.get("metrics")),
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_verify(names=None, *, manifest=None) -> tuple[bool, str]:
    """Re-hash every model file that is present locally; return ``(all ok, report text)``.

    Models with a ``url`` and no local copy are reported as ``not downloaded`` (not a failure);
    models with neither are ``MISSING`` (a failure). Unknown names raise :class:`WeightsError`.
    """
    models = _as_manifest(manifest)
    names = list(models) if not names else list(names)
    ok = True
    lines = []
    for name in names:
        e = get_entry(name, models)
        path, status = _local_file(e)
        if path is None:
            if status == "remote":
                lines.append(f"{name}: not downloaded ({e['url']})")
            else:
                ok = False
                lines.append(f"{name}: MISSING {_candidates(e)[0]}")
            continue
        try:
            verify_file(path, e["sha256"], name=name)
        except WeightsHashError as exc:
            ok = False
            lines.append(f"{name}: FAILED {path}\n    expected sha256 {exc.expected}\n    actual   sha256 {exc.actual}")
            continue
        size = path.stat().st_size
        if e.get("size_bytes") is not None and e["size_bytes"] != size:
            ok = False
            lines.append(f"{name}: FAILED {path}: size {size} != manifest size_bytes {e['size_bytes']}")
            continue
        lines.append(f"{name}: OK ({status}) {path}")
    if not lines:
        lines.append("no models in the weights manifest")
    return ok, "\n".join(lines)


def cmd_fetch(name: str, *, manifest=None) -> Path:
    """Make model ``name``'s weights available locally (downloading if needed) and return the path."""
    return resolve_weights(name, download=True, manifest=manifest)
