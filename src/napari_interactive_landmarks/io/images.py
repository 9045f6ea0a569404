"""Reading radiographs: PNG / JPEG / TIFF / BMP (through imageio, tifffile and Pillow) and DICOM (pydicom).

Every reader returns an :class:`ImageData` whose ``array`` is a 2-D ``float32`` greyscale image on its
*original* intensity scale (a 16-bit PNG keeps values up to 65535, a DICOM keeps its rescaled values, e.g.
Hounsfield-like units), so nothing is lost before :func:`normalise_intensity`, the one intensity mapping the
model's preprocessing uses.

Nothing here imports napari or Qt. Coordinates elsewhere in the package are (row, col) in the pixels of
the array returned here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ImageError",
    "ImageData",
    "read_image",
    "read_spacing",
    "as_greyscale_2d",
    "normalise_intensity",
    "is_dicom_file",
    "sniff_format",
    "IMAGE_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "MIN_SIDE",
    "MAX_SIDE",
]

#: Smallest accepted side length in pixels (the networks downsample by up to 32).
MIN_SIDE = 64
#: Largest accepted side length in pixels (beyond this, memory and inference time blow up).
MAX_SIDE = 10_000

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom")
IMAGE_EXTENSIONS = RASTER_EXTENSIONS + DICOM_EXTENSIONS

# ITU-R BT.601 luma weights (what Pillow's "L" conversion uses).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class ImageError(ValueError):
    """An image file or array cannot be used; the message names the file (or array) and the problem."""


@dataclass
class ImageData:
    """A 2-D greyscale radiograph.

    Attributes:
        array: (H, W) float32, original intensity scale (not normalised).
        spacing: (row_mm, col_mm) pixel spacing in millimetres, or None when the file does not say.
        path: the file it came from, or None for in-memory data.
        metadata: facts about the source, e.g. ``format``, ``original_dtype``, ``bit_depth``,
            ``photometric``, ``was_rgb``, ``inverted``, ``spacing_source``.
    """

    array: np.ndarray
    spacing: tuple[float, float] | None = None
    path: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# array validation and conversion


def _to_greyscale(arr: np.ndarray, name: str, check_size: bool) -> tuple[np.ndarray, dict]:
    """Shape and dtype handling shared by files and arrays: returns ((H, W) array, info).

    The size check (if asked) runs before any colour conversion so that huge images are refused before
    memory is allocated for them.
    """
    info: dict = {"original_dtype": str(arr.dtype), "was_rgb": False}
    if arr.dtype.kind not in "biuf":
        raise ImageError(
            f"{name}: pixel type {arr.dtype} is not supported; expected integers, floats or booleans"
        )
    if arr.size == 0:
        raise ImageError(f"{name}: the image is empty (shape {tuple(arr.shape)})")
    if arr.ndim > 2:
        # drop singleton axes: (1, H, W), (H, W, 1), (1, H, W, 1) are single 2-D images
        squeezed = [s for s in arr.shape if s != 1]
        if len(squeezed) <= 2:
            arr = arr.reshape([1] * (2 - len(squeezed)) + squeezed)
        elif len(squeezed) == 3 and squeezed[-1] in (2, 3, 4):
            arr = arr.reshape(squeezed)  # (H, W, C) colour / grey+alpha: handled below
        else:
            frames = squeezed[0]
            hint = ""
            if len(squeezed) == 3 and squeezed[0] in (3, 4):
                hint = (
                    " If this is a colour image stored channels-first (C, H, W), move the channel axis "
                    "last, e.g. np.moveaxis(array, 0, -1)."
                )
            raise ImageError(
                f"{name}: only 2-D radiographs are supported, but this is a stack of {frames} frames "
                f"(shape {tuple(arr.shape)}).{hint} Select one frame, e.g. array[0]."
            )
    if arr.ndim < 2:
        raise ImageError(f"{name}: a {arr.ndim}-D array (shape {tuple(arr.shape)}) is not an image")
    if check_size:
        _check_size(arr.shape, name)
    if arr.ndim == 3:
        c = arr.shape[-1]
        info["had_alpha"] = c in (2, 4)
        if c == 2:  # grey + alpha
            arr = arr[..., 0]
        else:
            info["was_rgb"] = True
            rgb = arr[..., :3]
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
                arr = rgb[..., 0]
                info["rgb_channels_equal"] = True
            else:
                info["rgb_channels_equal"] = False
                out = rgb.astype(np.float64) @ _LUMA
                if arr.dtype.kind in "iu":  # keep integer-valued output for integer input
                    out = np.rint(out)
                arr = out
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    return np.asarray(arr), info


def as_greyscale_2d(array, name: str = "image") -> np.ndarray:
    """Validate an in-memory image and return it as a (H, W) float32 greyscale array.

    Accepts (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) arrays of any integer, float or bool dtype (also
    singleton axes such as (1, H, W)). Colour is converted to luminance (BT.601 weights), unless the
    three channels are equal, in which case one is taken. Alpha is ignored. Intensities keep their scale.

    Raises:
        ImageError: empty arrays, stacks of several frames, NaN / infinite values, sides shorter than
            ``MIN_SIDE`` or longer than ``MAX_SIDE`` pixels, and constant images.
    """
    arr = np.asarray(array)
    arr, _ = _to_greyscale(arr, name, check_size=True)
    return _check_values(arr, name)


def _check_size(shape: tuple[int, ...], name: str) -> None:
    h, w = int(shape[0]), int(shape[1])
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageError(
            f"{name}: image is {h} × {w} px; at least {MIN_SIDE} px on each side is needed"
        )
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(
            f"{name}: image is {h} × {w} px; at most {MAX_SIDE} px on each side is supported. "
            f"Downsample it first (e.g. skimage.transform.rescale or rescale in an image editor) and "
            f"multiply the pixel spacing by the same factor."
        )


def _check_values(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
        if n_bad:
            n_nan = int(np.isnan(arr).sum())
            raise ImageError(
                f"{name}: {n_bad} of {arr.size} pixels are not finite ({n_nan} NaN, {n_bad - n_nan} "
                f"infinite); replace them (e.g. np.nan_to_num) before use"
            )
    out = arr.astype(np.float32, copy=False)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4 and not np.isfinite(out).all():
        raise ImageError(f"{name}: pixel values overflow float32 (largest |value| {np.abs(arr).max():g})")
    lo, hi = out.min(), out.max()
    if lo == hi:
        raise ImageError(f"{name}: the image is constant (every pixel equals {float(lo):g}); nothing to see")
    return np.ascontiguousarray(out)


def normalise_intensity(array) -> np.ndarray:
    """Map intensities to float32 in [0, 1] with a robust min/max: the 0.5th and 99.5th percentiles.

    This is the intensity preprocessing the models use (training and inference), so 8-bit, 16-bit and
    DICOM images end up on a comparable scale. Values outside the percentile range are clipped. If the
    percentiles coincide (almost constant image) the plain min/max is used; a constant image gives zeros.

    The arithmetic is done in float64, so any finite float32 image works: pixels near ±3.4e38 (the float32
    limit) would overflow ``hi - lo`` in float32 and turn the whole image into NaN.
    """
    a = np.array(array, dtype=np.float64)  # a copy: scaled in place below
    if a.size == 0:
        raise ImageError("normalise_intensity: the image is empty")
    if not np.isfinite(a).all():
        raise ImageError(
            f"normalise_intensity: {int((~np.isfinite(a)).sum())} pixels are NaN or infinite"
        )
    lo, hi = np.percentile(a, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(a.min()), float(a.max())
    if not hi > lo:
        return np.zeros(a.shape, dtype=np.float32)
    a -= lo
    a /= hi - lo
    return np.clip(a, 0.0, 1.0, out=a).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# files


def is_dicom_file(path) -> bool:
    """True if the file starts with the 128-byte DICOM preamble followed by ``DICM``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
)


def sniff_format(path) -> str | None:
    """The image format from the file's first bytes — ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"`` or ``"dicom"``
    (preamble + ``DICM``) — or None when they match none of these (or the file cannot be opened). Files are
    read by what they hold, not by their name: a JPEG named ``.tif`` is a JPEG."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _looks_dicom(path: Path, fmt: str | None = None) -> bool:
    """DICOM by content; by the extension only when the content is no other known format (DICOM without
    preamble)."""
    fmt = sniff_format(path) if fmt is None else fmt
    return fmt == "dicom" or (fmt is None and path.suffix.lower() in DICOM_EXTENSIONS)


def read_image(path, *, validate: bool = True) -> ImageData:
    """Read a 2-D radiograph from PNG, JPEG, TIFF, BMP or DICOM.

    The format is recognised by the file's content (:func:`sniff_format`), not its name, so a JPEG named
    ``.tif`` reads; DICOM by the ``DICM`` preamble, or by the ``.dcm`` / ``.dicom`` extension when the file
    starts with no other known format. Rescale slope/intercept is applied, MONOCHROME1 (and TIFF min-is-white) images are
    inverted so that bright means dense, and ``PixelSpacing`` (else ``ImagerPixelSpacing``) gives the
    spacing in mm. 16-bit PNG / TIFF values are preserved. Colour images become greyscale.

    Args:
        path: the file.
        validate: also apply the checks of :func:`as_greyscale_2d` (size limits, NaN, constant images).

    Raises:
        ImageError: missing, unreadable, corrupt or unsupported files, stacks of several frames, and (with
            ``validate``) images that fail the checks. The message names the file and the reason.
    """
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise ImageError(f"{name}: file not found")
    if p.is_dir():
        raise ImageError(f"{name}: is a folder, not an image file")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes)")

    fmt = sniff_format(p)
    if _looks_dicom(p, fmt):
        arr, spacing, meta = _read_dicom(p)
    elif fmt == "tiff":
        arr, meta = _read_tiff(p)
        spacing = None
    else:  # Pillow recognises PNG / JPEG / BMP (and more) by content itself
        arr, meta = _read_raster(p, fmt)
        spacing = None

    arr, info = _to_greyscale(arr, name, check_size=validate)
    meta.update({k: v for k, v in info.items() if k != "original_dtype"})
    meta.setdefault("original_dtype", info["original_dtype"])
    if meta.pop("_invert", False):
        arr = arr.astype(np.float32)
        arr = (arr.max() + arr.min()) - arr
        meta["inverted"] = True
    else:
        meta.setdefault("inverted", False)
    if validate:
        out = _check_values(arr, name)
    else:
        out = np.ascontiguousarray(arr, dtype=np.float32)
    return ImageData(array=out, spacing=spacing, path=name, metadata=meta)


def _bit_depth(dtype: np.dtype) -> int | None:
    dtype = np.dtype(dtype)
    if dtype == bool:
        return 1
    return dtype.itemsize * 8 if dtype.kind in "iuf" else None


def _read_raster(p: Path, fmt: str | None = None) -> tuple[np.ndarray, dict]:
    import imageio.v3 as iio

    name = str(p)
    try:
        arr = np.asarray(iio.imread(p, plugin="pillow"))
    except Exception as exc:  # decoders raise anything: OSError, ValueError, SyntaxError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "can not handle" in reason:  # imageio's wording when Pillow does not recognise the content
            reason = "the content is in no image format Pillow recognises"
        raise ImageError(
            f"{name}: not a readable image (PNG, JPEG, TIFF, BMP or DICOM expected; the decoder said: "
            f"{reason})"
        ) from None
    if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)):
        raise ImageError(
            f"{name}: only 2-D radiographs are supported, but the file holds {arr.shape[0]} frames "
            f"(shape {tuple(arr.shape)})"
        )
    meta = {
        "format": fmt or p.suffix.lower().lstrip(".") or "unknown",
        "original_dtype": str(arr.dtype),
        "bit_depth": _bit_depth(arr.dtype),
        "photometric": "RGB" if arr.ndim == 3 and arr.shape[-1] >= 3 else "MONOCHROME2",
    }
    return arr, meta


def _read_tiff(p: Path) -> tuple[np.ndarray, dict]:
    import tifffile

    name = str(p)
    try:
        with tifffile.TiffFile(p) as tif:
            n_series = len(tif.series)
            series = tif.series[0]
            axes = series.axes
            page = tif.pages[0]
            photometric = getattr(page.photometric, "name", str(page.photometric))
            arr = np.asarray(series.asarray())
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{name}: not a readable TIFF image ({reason})") from None
    # Samples (colour) axis last, then any non-spatial axis longer than 1 means several frames.
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    frame_axes = [(a, s) for a, s in zip(axes, arr.shape) if a not in "YXS" and s > 1]
    if frame_axes or n_series > 1:
        n = int(np.prod([s for _, s in frame_axes])) if frame_axes else n_series
        raise ImageError(
            f"{name}: only 2-D radiographs are supported, but this TIFF holds {n} frames "
            f"(shape {tuple(arr.shape)}, axes {axes})"
        )
    meta = {
        "format": "tiff",
        "original_dtype": str(arr.dtype),
        "bit_depth": _bit_depth(arr.dtype),
        "photometric": photometric,
    }
    if photometric.upper() == "MINISWHITE":
        meta["_invert"] = True
    return arr, meta


def _dicom_spacing(ds) -> tuple[tuple[float, float] | None, str | None]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        if value is None:
            continue
        try:
            vals = [float(v) for v in value]
        except (TypeError, ValueError):
            continue
        if len(vals) == 2 and all(math.isfinite(v) and v > 0 for v in vals):
            return (vals[0], vals[1]), keyword
    return None, None


def _dcmread(p: Path, **kwargs):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(p, **kwargs)
    except InvalidDicomError:
        # Some writers omit the preamble; accept those when the extension says DICOM.
        if p.suffix.lower() in DICOM_EXTENSIONS:
            return pydicom.dcmread(p, force=True, **kwargs)
        raise


def _read_dicom(p: Path) -> tuple[np.ndarray, tuple[float, float] | None, dict]:
    name = str(p)
    try:
        ds = _dcmread(p)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{name}: not a readable DICOM file ({reason})") from None
    if "PixelData" not in ds:
        raise ImageError(f"{name}: the DICOM file holds no image (no PixelData element)")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(
            f"{name}: only 2-D radiographs are supported, but this DICOM holds {frames} frames"
        )
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_txt = f" (transfer syntax {ts.name if hasattr(ts, 'name') else ts})" if ts else ""
        raise ImageError(
            f"{name}: the DICOM pixel data cannot be decoded{ts_txt}: {reason}. Compressed DICOM may "
            f"need an extra decoder: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
        ) from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    original_dtype = str(arr.dtype)
    bits = getattr(ds, "BitsStored", None) or getattr(ds, "BitsAllocated", None)
    meta: dict = {
        "format": "dicom",
        "original_dtype": original_dtype,
        "bit_depth": int(bits) if bits is not None else _bit_depth(arr.dtype),
        "photometric": photometric,
        "modality": str(getattr(ds, "Modality", "")) or None,
    }
    if photometric.startswith("MONOCHROME"):
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        if slope != 1 or intercept != 0:
            arr = arr.astype(np.float64) * slope + intercept
        meta["rescale_slope"] = slope
        meta["rescale_intercept"] = intercept
        if photometric == "MONOCHROME1":
            meta["_invert"] = True
    spacing, source = _dicom_spacing(ds)
    meta["spacing_source"] = source
    return arr, spacing, meta


def read_spacing(path) -> tuple[float, float] | None:
    """Pixel spacing (row_mm, col_mm) from a DICOM header without decoding pixels; None otherwise."""
    p = Path(path)
    if not p.is_file() or not _looks_dicom(p):  # by content: a JPEG named .dcm has no DICOM header
        return None
    try:
        ds = _dcmread(p, stop_before_pixels=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{p}: not a readable DICOM file ({reason})") from None
    return _dicom_spacing(ds)[0]
