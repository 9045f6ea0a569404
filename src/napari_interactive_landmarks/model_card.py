"""The model card: everything needed to use a weights file, written whole by the trainer and read back strictly.

One :class:`ModelCard` travels with every weights file the project writes — in the safetensors metadata (one
JSON string per field) and, for shipped models, as the entry in ``weights_manifest.yaml``. ``Predictor`` is
built from a card only, so a run's ``best.safetensors`` is as usable as a shipped model
(``--weights runs/x/best.safetensors`` in predict / evaluate / bench / calibrate / the widget).

A card that lacks a field the predictor needs is refused with a :class:`ModelCardError` naming the field —
there are no silent defaults (a 512 × 416 model must never run at some assumed 512 × 256).

Format versions: ``v1`` files (the first shipped models) carry no ``heatmap`` field; their logits were trained
with BCE unless their config says ``heatmap: softmax``, which is what the model builder assumes too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

FORMAT_V1 = "napari-interactive-landmarks/weights/v1"
FORMAT = "napari-interactive-landmarks/weights/v2"
HEATMAP_KINDS = ("sigmoid", "softmax")
# what every card must have to run a model
REQUIRED = ("schema", "config", "input_size", "sigma", "normalization")
DEFAULT_NORMALIZATION = {"intensity": "percentile 0.5-99.5 -> [0, 1]", "input": "x * 2 - 1", "channels": 1}


class ModelCardError(ValueError):
    """A weights file or manifest entry lacks, or has a malformed, model-card field."""


def check_temperatures(temperatures, source: str) -> list[float]:
    """The per-landmark temperatures as floats, or a :class:`ModelCardError` naming ``source`` and the first bad
    one: each must be a positive, finite number (dividing the logits by 0, a negative or NaN breaks every
    prediction)."""
    try:
        temps = [float(t) for t in temperatures]
    except (TypeError, ValueError):
        raise ModelCardError(f"{source}: 'temperatures' must be a list of numbers, got {temperatures!r}") from None
    bad = [i for i, t in enumerate(temps) if not (math.isfinite(t) and t > 0)]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ModelCardError(
            f"{source}: the temperature of landmark {bad[0]} is {temps[bad[0]]:g}{more}; temperatures must be positive "
            "and finite: calibrate the model again (napari-landmarks calibrate) or remove its temperatures")
    return temps


def check_interaction(section, source: str) -> dict:
    """The card's ``interaction`` section, or a :class:`ModelCardError` naming ``source``: a mapping whose ``hold``
    (map cells) is a finite number ≥ 0 and whose optional ``after_click_members`` (an ensemble's members that run
    after a click) is a non-empty list of member indices."""
    if not isinstance(section, Mapping):
        raise ModelCardError(f"{source}: 'interaction' must be a mapping such as {{hold: 0.5}}, got {section!r}")
    section = dict(section)
    hold = section.get("hold", 0.0)
    try:
        hold = float(hold)
    except (TypeError, ValueError):
        raise ModelCardError(f"{source}: 'interaction.hold' must be a number of map cells, got {hold!r}") from None
    if not (math.isfinite(hold) and hold >= 0):
        raise ModelCardError(f"{source}: 'interaction.hold' must be a finite number of map cells ≥ 0, got {hold:g}")
    section["hold"] = hold
    members = section.get("after_click_members")
    if members is not None:
        if (not isinstance(members, (list, tuple)) or not members
                or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in members)):
            raise ModelCardError(f"{source}: 'interaction.after_click_members' must be a non-empty list of ensemble "
                                 f"member indices, got {members!r}")
        section["after_click_members"] = [int(m) for m in members]
    return section


def check_ere_calibration(section, num_landmarks, source: str) -> None:
    """A :class:`ModelCardError` naming ``source`` when the card's ``ere_calibration`` is malformed (see
    ere_calibration.py); ``num_landmarks`` None: as many as its rows have."""
    from .ere_calibration import EreCalibration, EreCalibrationError

    if not isinstance(section, Mapping):
        raise ModelCardError(f"{source}: 'ere_calibration' must be a mapping, got {type(section).__name__}")
    try:
        k = num_landmarks if num_landmarks is not None else len(section.get("scales", [[]])[0])
        EreCalibration.from_card(section, int(k), source)
    except EreCalibrationError as exc:
        raise ModelCardError(str(exc)) from None
    except (TypeError, IndexError):
        raise ModelCardError(f"{source}: its 'ere_calibration' field is malformed") from None


@dataclass
class ModelCard:
    name: str
    schema: str | dict  # built-in landmark-set name, or a user's own set inline
    config: dict  # the resolved architecture config (num_landmarks, heatmap, …)
    input_size: tuple[int, int]  # (H, W) network input
    sigma: float  # hint / target Gaussian sigma, network pixels
    normalization: dict
    heatmap: str = "sigmoid"  # how the logits were trained: "sigmoid" (BCE) or "softmax" (2-D softmax + NLL)
    morphology: dict = field(default_factory=dict)  # {"pairs": [[i, j]…], "triplets": [[a, v, b]…], "weight"}
    temperatures: list | None = None  # per-landmark temperature scaling, when fitted
    training: dict = field(default_factory=dict)  # dataset, split file, epochs, seed, device, loss, …
    metrics: dict = field(default_factory=dict)
    calibration: dict | None = None
    # the shape prior's settings and provenance (its arrays are tensors of the weights file; see shape_model.py)
    shape_prior: dict | None = None
    # the conformal regions' level and radii (regions.py), fitted by `calibrate`
    regions: dict | None = None
    # the measurements' doubt scales (measurements/doubt.py): {kind, level, scales: {name: s}, pooled, num_samples,
    # fitted_on}, fitted by `calibrate`; without them a measurement's ± is the unscaled mean error
    doubt_scales: dict | None = None
    # the local second stage (models/refiner.py): {config, enabled, passes, training}; its tensors are the weights
    # file's ``refiner.*``
    refiner: dict | None = None
    # how an update treats the points a click does not concern when no shape prior decodes them: {hold: map cells,
    # chosen_on: …}; an unclicked landmark moved by less than ``hold`` cells stays where it was shown
    interaction: dict | None = None
    # the stated ERE's per-landmark, per-click-count scales and caps and the doubt maps' envelope weight
    # (ere_calibration.py), fitted by `calibrate`; without it the ERE is the doubt maps' own, uncalibrated
    ere_calibration: dict | None = None
    # the calibration films' size, contrast and map breadth and the limits a film is checked against
    # (familiarity.py), fitted by `calibrate`; a film beyond them has its regions drawn at the wider level
    familiarity: dict | None = None

    def __post_init__(self):
        src = self.name or "model card"
        if not isinstance(self.config, Mapping) or not self.config:
            raise ModelCardError(f"{src}: 'config' must be a non-empty mapping")
        self.config = dict(self.config)
        try:
            h, w = (int(v) for v in self.input_size)
        except (TypeError, ValueError):
            raise ModelCardError(f"{src}: 'input_size' must be [H, W], got {self.input_size!r}") from None
        if h <= 0 or w <= 0:
            raise ModelCardError(f"{src}: 'input_size' must be positive, got {self.input_size!r}")
        self.input_size = (h, w)
        try:
            self.sigma = float(self.sigma)
        except (TypeError, ValueError):
            raise ModelCardError(f"{src}: 'sigma' must be a number, got {self.sigma!r}") from None
        if self.heatmap not in HEATMAP_KINDS:
            raise ModelCardError(f"{src}: 'heatmap' must be one of {HEATMAP_KINDS}, got {self.heatmap!r}")
        cfg_heatmap = self.config.get("heatmap")
        if cfg_heatmap not in (None, self.heatmap):
            raise ModelCardError(f"{src}: 'heatmap' is {self.heatmap!r} but the config says {cfg_heatmap!r}")
        self.config["heatmap"] = self.heatmap
        if not isinstance(self.schema, (str, Mapping)):
            raise ModelCardError(f"{src}: 'schema' must be a landmark-set name or an inline landmark set")
        if self.temperatures is not None:
            self.temperatures = check_temperatures(self.temperatures, src)
        if self.interaction is not None:
            self.interaction = check_interaction(self.interaction, src)
        if self.ere_calibration is not None:  # refused here, naming the file, not at the first prediction
            check_ere_calibration(self.ere_calibration, self.config.get("num_landmarks"), src)
        if self.familiarity is not None:  # refused here, naming the file, not at the first film
            from .familiarity import FamiliarityCheck, FamiliarityError

            try:
                k = self.config.get("num_landmarks") or len(self.familiarity.get("ere_median", []))
                FamiliarityCheck.from_card(self.familiarity, int(k), src)
            except FamiliarityError as exc:
                raise ModelCardError(str(exc)) from None
            except (TypeError, AttributeError):
                raise ModelCardError(f"{src}: its 'familiarity' field is malformed") from None
        if self.doubt_scales is not None:  # refused here, naming the file, not at the first measurement
            from .measurements.scales import DoubtScaleError, as_doubt_scales

            try:
                self.doubt_scales = as_doubt_scales(self.doubt_scales, src).to_card()
            except DoubtScaleError as exc:
                raise ModelCardError(str(exc)) from None

    # ------------------------------------------------------------------ properties
    @property
    def num_landmarks(self) -> int | None:
        return self.config.get("num_landmarks")

    @property
    def schema_name(self) -> str | None:
        return self.schema.get("name") if isinstance(self.schema, Mapping) else self.schema

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_mapping(cls, data: Mapping, name: str | None = None, source: str | None = None) -> "ModelCard":
        """From a manifest entry or decoded metadata; extra keys (file, sha256, …) are ignored.
        ``source`` names the file or entry in error messages."""
        src = source or name or data.get("name") or "model card"
        missing = [k for k in REQUIRED if data.get(k) is None]
        if missing:
            raise ModelCardError(
                f"{src} lacks the model-card field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}: "
                "it cannot be used without knowing "
                + ", ".join({"schema": "which landmark set it predicts", "config": "its architecture",
                             "input_size": "its input size", "sigma": "its hint sigma",
                             "normalization": "its intensity normalisation"}[k] for k in missing)
                + " (weights written by `napari-landmarks train` or `weights register` carry them all)")
        heatmap = data.get("heatmap")
        if heatmap is None:
            if data.get("format") not in (None, FORMAT_V1):
                raise ModelCardError(f"{src} lacks the model-card field 'heatmap' (how its logits were trained)")
            heatmap = (data.get("config") or {}).get("heatmap") or "sigmoid"  # v1: BCE unless the config says so
        if data.get("interaction") is not None:  # refused here, naming the file
            check_interaction(data["interaction"], src)
        if data.get("temperatures") is not None:  # refused here, naming the file, not at the first prediction
            check_temperatures(data["temperatures"], src)
        if data.get("ere_calibration") is not None:
            check_ere_calibration(data["ere_calibration"], (data.get("config") or {}).get("num_landmarks"), src)
        known = {f.name for f in fields(cls)}
        kw = {k: data[k] for k in known if k in data and data[k] is not None}
        kw.update(name=str(name or data.get("name") or "model"), heatmap=heatmap)
        return cls(**kw)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str = "weights file") -> "ModelCard":
        """From safetensors metadata (every value a string; structured ones JSON-encoded)."""
        decoded = {}
        for k, v in meta.items():
            if isinstance(v, str) and v[:1] in "[{" or k in ("temperatures", "input_size", "sigma"):
                try:
                    v = json.loads(v)
                except (TypeError, ValueError):
                    raise ModelCardError(f"{source}: model-card field {k!r} is not valid JSON") from None
            decoded[k] = v
        return cls.from_mapping(decoded, source=source)

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    def to_entry(self) -> dict:
        """The manifest form (without file / sha256 / url, which belong to the stored file)."""
        d = self.to_dict()
        d.pop("name")
        for key in ("calibration", "shape_prior", "regions", "doubt_scales", "refiner", "interaction",
                    "ere_calibration", "familiarity"):
            if d.get(key) is None:
                d.pop(key)
        return d

    def to_metadata(self) -> dict[str, str]:
        """Safetensors metadata: the whole card, one string per field."""
        meta = {"format": FORMAT}
        for k, v in self.to_dict().items():
            if v is None:
                continue
            meta[k] = v if isinstance(v, str) else json.dumps(v)
        return meta
