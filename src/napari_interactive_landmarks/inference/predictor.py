"""Headless predictor: weights → model → landmarks in original-image (row, col) pixels.

    >>> from napari_interactive_landmarks.inference import Predictor
    >>> p = Predictor.from_name("aasce-spine")            # or Predictor.from_file("my.safetensors")
    >>> first = p.predict(image)                          # fully automatic
    >>> fixed = p.predict(image, clicks={5: (812.0, 301.5)}, previous=first.coords)

``clicks`` maps landmark index (or name) → (row, col) in original pixels. The model receives a click map
and the previous prediction **only in the clicked channels**; clicked landmarks come back exactly where
the user put them. Call ``prepare(image)`` once per image and pass the result to ``predict`` to skip the
preprocessing on every update.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..codecs.codec import LandmarkCodec
from ..codecs.heatmaps import decode_strided_logits
from ..codecs.uncertainty import expected_radial_error, softmax_maps, spread_covariance, tempered_logits
from ..codecs.geometry import resize_image
from ..data.cache import preprocess
from ..ere_calibration import ENVELOPE_WEIGHT, EreCalibration
from ..io.images import ImageError, as_greyscale_2d, normalise_intensity
from ..models.folding import fold_batchnorm
from ..models.refiner import EXPECTED_ERROR_BLEND, REFINER_PREFIX, LocalRefiner, fine_image, refine_points
from ..models.interactive import build_model, check_input_size, resolve_config
from ..schemas import LandmarkSchema, load_schema
from ..shape_model import TENSOR_PREFIX, CorruptShapeModelError, ShapeModel, ShapeModelError, normalise
from .device import choose_device

log = logging.getLogger(__name__)


class PredictionError(ValueError):
    """Bad clicks, previous coordinates, an image the model cannot use, a model/landmark-set mismatch or a
    model that returns non-finite coordinates, said in plain words."""


class UnusableImageError(ImageError, PredictionError):
    """An image the model cannot use (NaN / infinite pixels, a constant image, wrong size or shape): an
    :class:`ImageError` as it always was, and a :class:`PredictionError` like every other refusal of
    :meth:`Predictor.predict`."""


@dataclass
class PreparedImage:
    original_shape: tuple[int, int]
    tensor: torch.Tensor  # (1, 1, h, w) in [-1, 1], on the model's device
    key: str  # content hash (for caches keyed by image content)
    # (1, 1, H / step, W / step) the normalised film for the refiner's crops, when the model has a refiner
    fine: torch.Tensor | None = None


@dataclass
class Prediction:
    coords: np.ndarray  # (K, 2) float64 (row, col), original pixels
    # (K,) in [0, 1]: the peak sigmoid heatmap value for BCE-trained models; for softmax-trained models the
    # maximum of the calibrated 2-D softmax map (the paper's "confidence", as in the reliability diagrams)
    scores: np.ndarray
    clicked: np.ndarray  # (K,) bool: pinned by a click
    logits: torch.Tensor = field(repr=False)  # (K, h/4, w/4) network logits, for heatmaps / uncertainty
    original_shape: tuple[int, int] = (0, 0)
    input_size: tuple[int, int] = (0, 0)
    # (K,) the stated expected radial error, original pixels (0 for clicked landmarks): read from the doubt maps
    # (``prob``) about the points shown, then calibrated per landmark and click count (ere_calibration.py)
    ere: np.ndarray | None = None
    temperatures: np.ndarray | None = field(default=None, repr=False)  # (K,) used for ``ere``; None = 1
    # (K, h/4, w/4) the doubt maps: each landmark's calibrated network map times the anatomy's envelope (its shape
    # model's Gaussian given the corrections only; the network's map alone for a model without a shape model)
    prob: np.ndarray | None = field(default=None, repr=False)
    # True when the points were decoded under the shape prior (``prob`` and ``ere`` stay the doubt maps, and the
    # expected error about the points shown)
    shape_prior: bool = False
    # (K,) the ERE as read from the doubt maps, before the per-landmark calibration (NaN for clicked landmarks)
    ere_raw: np.ndarray | None = field(default=None, repr=False)
    # (K,) bool: the doubt map is spread wider than the landmark's real errors ever were on the calibration films
    # (a flat map, two far-apart peaks): its ERE is stated unscaled and the point should be checked
    ere_wide: np.ndarray | None = None
    # (K,) the expected gain of correcting each unclicked landmark: its stated ERE plus the others' stated EREs, each
    # weighted by the share of its positional variance the anatomy says that correction removes (NaN for clicked
    # ones); None without ERE or a shape model
    gain: np.ndarray | None = None
    # True when the local second stage re-found the unclicked landmarks (models/refiner.py)
    refined: bool = False
    # (K, 2, 2) the map's spread about each point, original pixels² (NaN for clicked landmarks): the regions' shape
    spread: np.ndarray | None = field(default=None, repr=False)
    # (K,) the conformal radius of each landmark's region (NaN for clicked ones), when the model has regions
    region_radius: np.ndarray | None = None
    region_level: float | None = None

    def regions(self):
        """Each landmark's conformal region as ``(semi_axes (K, 2), angle_deg (K,), area_px2 (K,))`` around
        :attr:`coords`, or None when the model has no regions; NaN for clicked landmarks."""
        from ..regions import ellipses, region_area

        if self.region_radius is None or self.spread is None:
            return None
        axes, angle = ellipses(self.spread, self.region_radius)
        return axes, angle, region_area(self.spread, self.region_radius)

    def probabilities(self) -> np.ndarray:
        """Calibrated per-landmark probability maps (2-D softmax of logits / T), (K, h/4, w/4), each sums to 1."""
        if self.prob is not None:
            return self.prob
        with torch.no_grad():
            return softmax_maps(self.logits.float(), self.temperatures).cpu().numpy()

    def uncertainty_map(self, include=None) -> np.ndarray:
        """One (h/4, w/4) map in [0, 1] for display: each landmark's calibrated probability map divided by its
        maximum, combined by taking the maximum over the landmarks in ``include`` (bool (K,), default all)."""
        p = self.probabilities()
        if include is not None:
            p = p[np.asarray(include, bool)]
        if len(p) == 0:
            return np.zeros(self.logits.shape[-2:], np.float32)
        peak = p.reshape(len(p), -1).max(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = p / np.where(peak > 0, peak, 1.0)[:, None, None]
        return np.nan_to_num(norm.max(axis=0), nan=0.0).astype(np.float32)

    def heatmaps(self, size=None) -> np.ndarray:
        """Per-landmark sigmoid heatmaps, (K, H, W) at ``size`` (default: the network input size).
        (For softmax-trained models this is the sigmoid of their logits too: use ``probabilities``.)"""
        from ..models.interactive import upsample_logits

        size = tuple(size or self.input_size)
        with torch.no_grad():
            return torch.sigmoid(upsample_logits(self.logits[None].float(), size))[0].cpu().numpy()


class _StageClock:
    """Milliseconds per stage of one :meth:`Predictor.predict`, added to ``sink`` (a dict; None: does nothing).
    ``clock("forward")`` closes the stage that began at the previous call (or at construction)."""

    def __init__(self, sink: dict | None, device: torch.device):
        self.sink, self.cuda = sink, device.type == "cuda"
        self.t = time.perf_counter() if sink is not None else 0.0

    def __call__(self, stage: str) -> None:
        if self.sink is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.sink[stage] = self.sink.get(stage, 0.0) + (now - self.t) * 1000.0
        self.t = now


class Predictor:
    def __init__(self, model: torch.nn.Module, schema: LandmarkSchema, input_size, sigma: float, name: str = "model",
                 device=None, info: dict | None = None, temperatures=None):
        self.device = choose_device(device) if not isinstance(device, torch.device) else device
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.schema = schema
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.sigma = float(sigma)
        self.name = name
        self.info = info or {}
        self.card = None  # the ModelCard, when built from one (from_card / from_entry / from_file)
        temps = temperatures if temperatures is not None else self.info.get("temperatures")
        if isinstance(temps, str):
            temps = json.loads(temps)
        self.temperatures = None if temps is None else np.asarray(temps, dtype=np.float64)
        if self.temperatures is not None and self.temperatures.shape not in ((), (schema.num_landmarks,)):
            raise PredictionError(f"model '{name}' has {self.temperatures.size} temperatures for {schema.num_landmarks} landmarks")
        self.compute_ere = True
        self.regions = None  # RegionCalibration, when the card has conformal regions
        # the regions' ellipse: the map's second moment above this fraction of its maximum (the ERE's cut; other cuts
        # made larger regions at the same coverage: experiments/benchmarks/regions_shape.py, which varies it)
        self.spread_cut = 0.05
        self.regions_problem: str | None = None  # why the card's regions are not used
        self.shape_model: ShapeModel | None = None
        # the stated ERE's per-landmark, per-click-count scales and caps (the card's ``ere_calibration``), and the
        # anatomy's envelope weight in the doubt maps (0: the network's map alone)
        self.ere_calibration: EreCalibration | None = None
        # whether a film is like the calibration films (familiarity.py), when the card has the check
        self.familiarity = None
        # an ensemble's members that run after a click in fp32 on the CPU (None: all): spends the compute of the full
        # ensemble on the fully automatic answer only (issue 39 item 2; benchmarks/trust.py --after-click-members)
        self.after_click_members: list[int] | None = None
        self.envelope_weight = ENVELOPE_WEIGHT
        # when a dict: each predict() adds the milliseconds of its stages to it (``bench``; issue 39 item 4)
        self.stage_ms: dict | None = None
        self._envelope: tuple | None = None  # (shape model, weight, its envelope model), cached
        self._zone_geometry = None  # (shape model, film size key, capped mean-shape distances): exclusion zones
        self.use_shape_prior = True  # the user's switch (--no-shape-prior, the widget's checkbox)
        self.shape_prior_problem: str | None = None  # why a stored shape model is not used, said once
        self.refiner = None  # the local second stage (models/refiner.LocalRefiner), when the card has one enabled
        self.refiner_passes = 1
        self.refiner_blend = 1.0  # the refined point's weight against the first stage's (1: the refined point)
        # when set (and refiner_blend None), each point's weight comes from the two stages' expected errors: the first
        # stage's calibrated ERE e1 and the refiner's own e2 times this scale, w_refined = e1² / (e1² + (scale·e2)²)
        self.refiner_error_scale: float | None = None
        self.use_refiner = True  # the user's switch (--no-refiner)
        # after a click, an unclicked landmark the network alone (no shape prior decoding) moves by less than this many
        # cells of its stride-4 map from where it was shown stays there: such a move is the network's jitter between
        # updates, not a correction (the card's ``interaction.hold``; under the prior its own ``hold`` applies)
        self.hold = 0.0
        self.refiner_problem: str | None = None  # why a stored refiner is not used
        self.precision = "fp32"  # the networks' arithmetic: "fp32" or "bf16" (set_precision; --precision)
        self.heatmap = getattr(model, "heatmap", "sigmoid")
        # every coordinate conversion; the logits' stride is the model's (4: HRNet, 1: FARNet / CHH U-Net)
        self.codec = LandmarkCodec(self.input_size, self.sigma, self.heatmap, stride=getattr(model, "output_stride", 4))
        if getattr(model, "hint_sigma", None) is None:
            model.hint_sigma = self.sigma  # the model draws its click maps with the card's sigma
        elif abs(model.hint_sigma - self.sigma) > 1e-9:
            raise PredictionError(f"model '{name}' draws its click maps with sigma {model.hint_sigma}, not {self.sigma}")
        if model.num_landmarks != schema.num_landmarks:
            raise PredictionError(
                f"model '{name}' predicts {model.num_landmarks} landmarks but its landmark set '{schema.name}' has "
                f"{schema.num_landmarks}")

    def set_precision(self, precision: str) -> str:
        """The arithmetic of the networks' forward passes: ``"fp32"``, ``"bf16"`` (autocast; every step after the
        network stays float32) or ``"auto"`` (bf16 on a CPU whose oneDNN computes it natively, e.g. AVX512-BF16 or
        AMX, else fp32). Returns the precision chosen."""
        if precision not in ("fp32", "bf16", "auto"):
            raise PredictionError(f"precision must be fp32, bf16 or auto, not {precision!r}")
        if precision == "auto":
            precision = "bf16" if self.device.type == "cpu" and native_cpu_bf16() else "fp32"
        self.precision = precision
        return precision

    def autocast(self):
        """The context of a network forward pass in the chosen precision."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_card(cls, card, weights_path, device=None) -> "Predictor":
        """A model described by a :class:`~napari_interactive_landmarks.model_card.ModelCard` whose weights are in
        ``weights_path``."""
        from ..weights import load_weights

        name = card.name
        schema = load_schema(card.schema)
        trained_k = card.config.get("num_landmarks")
        if trained_k not in (None, schema.num_landmarks):
            raise PredictionError(
                f"weights '{name}' were trained for {trained_k} landmarks, but the landmark set '{schema.name}' has "
                f"{schema.num_landmarks}: choose the matching model")
        cfg = resolve_config({**card.config, "num_landmarks": schema.num_landmarks, "hint_sigma": card.sigma})
        check_input_size(cfg, card.input_size)
        state, _ = load_weights(weights_path)
        shape_tensors = {k: state.pop(k).numpy() for k in [k for k in state if k.startswith(TENSOR_PREFIX)]}
        refiner_tensors = {k[len(REFINER_PREFIX):]: state.pop(k) for k in [k for k in state
                                                                          if k.startswith(REFINER_PREFIX)]}
        model = build_model(cfg, source=Path(weights_path).name)  # a config asking for TBs: one line, nothing allocated
        _load_state(model, state, weights_path, schema)
        pred = cls(model, schema, card.input_size, card.sigma, name, device, card.to_dict(),
                   temperatures=card.temperatures)
        # this model is the file's own, only ever run: its batch norms folded into their convolutions (the same
        # function; 7.5 % of an isbi-ceph update in bf16, 2 % in fp32, on 2 CPU threads: docs/history.md)
        fold_batchnorm(pred.model)
        pred.card = card
        if card.regions is not None:
            from ..regions import RegionCalibration, RegionError

            try:
                pred.regions = RegionCalibration.from_card(card.regions, schema.num_landmarks, Path(weights_path).name)
            except RegionError as exc:
                pred.regions_problem = f"{exc}; no regions are drawn"
                log.warning(pred.regions_problem)
        if card.interaction is not None:  # checked when the card was read
            pred.hold = card.interaction["hold"]
            members = card.interaction.get("after_click_members")
            if members is not None:
                count = len(getattr(pred.model, "members", []))
                if not count or max(members) >= count:
                    raise PredictionError(f"{Path(weights_path).name}: 'interaction.after_click_members' {members} "
                                          f"names members of an ensemble, but the model has {count or 'no'} members")
                pred.after_click_members = list(members)
        if card.ere_calibration is not None:  # checked when the card was read
            pred.ere_calibration = EreCalibration.from_card(card.ere_calibration, schema.num_landmarks, name)
            pred.envelope_weight = pred.ere_calibration.envelope_weight
        if card.familiarity is not None:  # checked when the card was read
            from ..familiarity import FamiliarityCheck

            pred.familiarity = FamiliarityCheck.from_card(card.familiarity, schema.num_landmarks, name)
        if card.refiner is not None or refiner_tensors:
            pred._set_refiner_from_card(card.refiner, refiner_tensors, Path(weights_path).name)
        try:
            pred.set_shape_model(ShapeModel.from_stored(shape_tensors, card.shape_prior, schema.num_landmarks,
                                                        schema.name))
        except CorruptShapeModelError as exc:  # a damaged file is refused, not used with its eigenvalues floored
            raise PredictionError(f"{Path(weights_path).name}: {exc}") from None
        except ShapeModelError as exc:
            pred.shape_prior_problem = f"{Path(weights_path).name}: {exc}; the network alone places the points"
            log.warning(pred.shape_prior_problem)
        return pred

    def _set_refiner_from_card(self, section, tensors: dict, source: str) -> None:
        """The card's refiner (enabled or not) from its section and tensors; a broken one is said once and the first
        stage alone places the points."""
        try:
            if not isinstance(section, dict) or not isinstance(section.get("config"), dict):
                raise ValueError("the card's 'refiner' section needs a 'config' mapping" if tensors
                                 else "the card names a refiner but the file holds none of its tensors")
            refiner = LocalRefiner.from_config(section["config"])
            if refiner.num_landmarks != self.num_landmarks:
                raise ValueError(f"the refiner predicts {refiner.num_landmarks} landmarks, the model "
                                 f"{self.num_landmarks}")
            own = {k for k in refiner.state_dict() if not k.endswith("num_batches_tracked")}
            if own - set(tensors) or set(tensors) - own:
                raise ValueError("its tensors do not match its config")
            refiner.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
            passes = int(section.get("passes", 1))
            if passes < 1:
                raise ValueError(f"passes must be 1 or more, got {passes}")
            error_scale = None
            if section.get("blend") == EXPECTED_ERROR_BLEND:
                blend = None
                error_scale = float(section.get("error_scale", 1.0))
                if not (np.isfinite(error_scale) and error_scale > 0):
                    raise ValueError(f"error_scale must be a positive number, got {section.get('error_scale')}")
                if self.heatmap != "softmax":
                    raise ValueError("a blend by expected error needs a first stage with calibrated softmax maps")
            else:
                blend = float(section.get("blend", 1.0))
                if not 0.0 < blend <= 1.0:
                    raise ValueError(f"blend must be in (0, 1] or '{EXPECTED_ERROR_BLEND}', got {blend}")
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:
            self.refiner_problem = f"{source}: refiner unusable ({exc}); the first stage alone places the points"
            log.warning(self.refiner_problem)
            return
        if section.get("enabled", True):
            self.refiner = refiner.to(self.device).eval()
            fold_batchnorm(self.refiner)
            self.refiner_passes = passes
            self.refiner_blend = blend
            self.refiner_error_scale = error_scale

    @property
    def refiner_active(self) -> bool:
        return self.use_refiner and self.refiner is not None

    def set_shape_model(self, shape_model: ShapeModel | None) -> None:
        """Use ``shape_model`` (or none) for decoding under the anatomy's prior."""
        if shape_model is not None and shape_model.num_landmarks != self.num_landmarks:
            raise ShapeModelError(f"a shape model for {shape_model.num_landmarks} landmarks cannot serve model "
                                  f"'{self.name}' ({self.num_landmarks} landmarks)")
        self.shape_model = shape_model
        self.shape_prior_problem = None

    @property
    def shape_prior_active(self) -> bool:
        """Whether predictions are decoded under the shape prior (a model with one, enabled in its card, and not
        switched off by the user)."""
        return self.use_shape_prior and self.shape_model is not None and self.shape_model.settings.enabled

    @classmethod
    def from_entry(cls, name: str, entry: dict, weights_path, device=None) -> "Predictor":
        """A manifest entry (the model card in YAML) and its weights file."""
        from ..model_card import ModelCard

        return cls.from_card(ModelCard.from_mapping(entry, name=name, source=f"model '{name}'"), weights_path, device)

    @classmethod
    def from_name(cls, name: str, device=None, download: bool = False) -> "Predictor":
        """A model listed in weights_manifest.yaml (hash-checked; never unpickled)."""
        from ..weights import get_entry, resolve_weights

        entry = get_entry(name)
        return cls.from_entry(name, entry, resolve_weights(name, download=download), device)

    @classmethod
    def from_file(cls, path, schema=None, device=None) -> "Predictor":
        """A self-describing safetensors file: a training run's ``best.safetensors`` or a registered model. Its
        metadata must hold the whole model card (a missing field is an error naming it). ``schema`` (name, path or
        LandmarkSchema), when given, must match the file's landmark set, or stands in for a file that names none."""
        from ..model_card import ModelCard
        from ..weights import load_weights

        path = Path(path)
        _, meta = load_weights(path)
        meta = dict(meta)
        meta.setdefault("name", path.stem)
        if schema is not None:
            want = load_schema(schema)
            file_schema = meta.get("schema")
            got_name = None
            if file_schema:
                got_name = json.loads(file_schema).get("name") if file_schema[:1] == "{" else file_schema
            try:
                got_k = json.loads(meta.get("config") or "{}").get("num_landmarks")
            except ValueError:
                got_k = None
            if (got_k is not None and got_k != want.num_landmarks) or (got_name and got_name != want.name):
                raise PredictionError(
                    f"{path.name} is for the landmark set '{got_name}' ({got_k} landmarks), not '{want.name}' "
                    f"({want.num_landmarks} landmarks): choose the matching model")
            meta["schema"] = json.dumps(want.to_dict())
        card = ModelCard.from_metadata(meta, source=path.name)
        return cls.from_card(card, path, device)

    # ------------------------------------------------------------------ inference
    @property
    def num_landmarks(self) -> int:
        return self.schema.num_landmarks

    def prepare(self, image) -> PreparedImage:
        if isinstance(image, PreparedImage):
            if self.refiner is not None and image.fine is None:
                raise PredictionError("this image was prepared by a model without a refiner: prepare it with this "
                                      "model (Predictor.prepare) before predicting")
            return image
        fine = None
        try:
            grey = as_greyscale_2d(image)
            if self.refiner is None:
                net = preprocess(grey, self.input_size)
            else:  # the same preprocessing, its normalised film kept for the refiner's crops
                unit = normalise_intensity(grey)
                net = resize_image(unit, self.input_size)
                fine = fine_image(unit, self.refiner.step).to(self.device)
        except ImageError as exc:
            raise UnusableImageError(str(exc)) from None
        except Exception as exc:  # e.g. an object that is no array at all
            raise UnusableImageError(f"cannot use this input as an image: {exc}") from None
        if not np.isfinite(net).all():  # the one place every image passes: never hand the network NaN
            raise UnusableImageError("image: its intensities cannot be normalised (non-finite values after scaling)")
        key = hashlib.sha1(np.ascontiguousarray(grey).tobytes()).hexdigest()[:16]
        t = torch.from_numpy(net * 2.0 - 1.0)[None, None].to(self.device).contiguous(memory_format=torch.channels_last)
        return PreparedImage(grey.shape, t, key, fine)

    def _check_clicks(self, clicks, shape) -> dict[int, tuple[float, float]]:
        out = {}
        h, w = shape
        for key, pos in (clicks or {}).items():
            try:
                i = self.schema.index(key)
            except (IndexError, KeyError) as exc:
                raise PredictionError(exc.args[0]) from None
            try:
                r, c = (float(v) for v in pos)
            except (TypeError, ValueError):
                raise PredictionError(f"click for landmark {i} ('{self.schema.landmarks[i]}') must be (row, col), got {pos!r}") from None
            if not (math.isfinite(r) and math.isfinite(c)):
                raise PredictionError(f"click for landmark {i} ('{self.schema.landmarks[i]}') is not a finite position: {pos!r}")
            if not (-0.5 <= r <= h - 0.5 and -0.5 <= c <= w - 0.5):
                raise PredictionError(
                    f"click for landmark {i} ('{self.schema.landmarks[i]}') at (row {r:.1f}, col {c:.1f}) lies outside the "
                    f"image ({h} × {w} px)")
            out[i] = (r, c)
        return out

    def _interaction(self, clicks: dict, previous: np.ndarray | None, shape):
        """The model's interaction inputs in network pixels: (clicks (1, K, 2), clicked (1, K), previous
        (1, K, 2) or None), on the model's device."""
        k = self.num_landmarks
        click_net = np.full((1, k, 2), np.nan)
        clicked = np.zeros((1, k), bool)
        prev_net = None
        if clicks:
            idx = np.array(sorted(clicks))
            click_net[0, idx] = self.codec.to_network(np.array([clicks[i] for i in idx]), shape)
            clicked[0, idx] = True
            if previous is not None:
                prev_net = self.codec.to_network(previous, shape)[None]
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        return (as_t(click_net), torch.as_tensor(clicked, device=self.device),
                None if prev_net is None else as_t(prev_net))

    def _hints(self, clicks: dict, previous: np.ndarray | None, shape) -> torch.Tensor:
        """(1, 2K, h/2, w/2): the hint maps the model draws for these clicks (for benchmarks and tests)."""
        c, m, p = self._interaction(clicks, previous, shape)
        return self.codec.hints(p, c, m)

    @torch.no_grad()
    def predict(self, image, clicks=None, previous=None, shape_prior: bool | None = None) -> Prediction:
        """Landmarks of ``image`` given ``clicks`` and the ``previous`` prediction. ``shape_prior`` (default: the
        predictor's :attr:`shape_prior_active`) decodes the unclicked landmarks under the anatomy's prior."""
        clock = _StageClock(self.stage_ms, self.device)
        prepared = self.prepare(image)
        shape = prepared.original_shape
        clicks = self._check_clicks(clicks, shape)
        if previous is not None:
            try:
                previous = np.asarray(previous, dtype=np.float64)
            except (TypeError, ValueError) as exc:  # e.g. strings: numpy's message would not say which argument
                raise PredictionError(f"previous must be a ({self.num_landmarks}, 2) array of (row, col) numbers; "
                                      f"its values are not numbers ({exc})") from None
            if previous.shape != (self.num_landmarks, 2):
                raise PredictionError(
                    f"previous must be a ({self.num_landmarks}, 2) array of (row, col), got shape {previous.shape}")
        click_net, clicked_t, prev_net = self._interaction(clicks, previous, shape)
        fast = self._fast_after_click()
        self._ensure_eval()
        clock("input")
        if hasattr(self.model, "active"):  # an ensemble: every member before a click, the chosen ones after
            self.model.active = self.after_click_members if clicks and fast else None
        with self.autocast():
            out = self.model(prepared.tensor, clicks=click_net, clicked=clicked_t, previous=prev_net)
        # the network runs channels-last; every full-map step after it (argmax, softmax, ERE, display map) reads one
        # map at a time, 2-7 x faster from a contiguous copy (benchmarks/uncertainty_cost.py --weights --image)
        logits = out["logits"].float().contiguous()
        clock("forward")
        prior_on = self.shape_prior_active if shape_prior is None else bool(shape_prior and self.shape_model is not None)
        # where no unclicked landmark may end: around each click (None without clicks or a shape model)
        zones = self._exclusion_zones(clicks, shape)
        # the network's own decoding: skipped when the prior decodes every landmark after a click (softmax models,
        # whose reported peak comes from the calibrated maps below); needed before any click to start from
        net_np = peak = posterior = prob = None
        if not (prior_on and clicks and self.heatmap == "softmax"):
            net, peak = self.codec.decode(logits)
            net_np = net[0].cpu().numpy().astype(np.float64)
            if zones is not None and not prior_on and self.heatmap == "softmax":
                # the network alone after a click: no other landmark decoded onto a clicked one either (the
                # exclusion zone of the prior's decoding; e.g. ANS sliding onto a corrected A point)
                keep_out = self._exclusion(zones, shape, tuple(logits.shape[-2:]), logits.device)
                if keep_out is not None:
                    net, _ = self.codec.decode(logits + keep_out[None])
                    net_np = net[0].cpu().numpy().astype(np.float64)
        clock("decode")
        # the calibrated log-maps, read by the prior's decoding and the doubt maps
        tempered = tempered_logits(logits[0], self.temperatures) if self.heatmap == "softmax" else None
        if prior_on:
            fused = self._decode_under_prior(logits[0], net_np, clicks, shape, zones, tempered)
            if fused is not None:
                net_np, posterior = fused
            clock("prior")
        if net_np is None:  # the prior failed (said once): the network alone
            net, peak = self.codec.decode(logits)
            net_np = net[0].cpu().numpy().astype(np.float64)
        coords = self.codec.to_original(net_np, shape)
        # one ensemble member after a click, made invisible: each unclicked point is the full model's fully automatic
        # answer moved by what the clicks changed in that member's answer (issue 39 item 2)
        shifted = bool(clicks) and fast
        if shifted:
            full0, member0 = self._zero_click_base(prepared)
            own = coords
            coords = full0 + (coords - member0)
            near = self._inside_zones(coords, zones)  # moved into a click's zone: the member's own place, outside it
            coords[near] = own[near]
            net_np = self.codec.to_network(coords, shape)
            clock("one-member delta")
        refined = self.refiner_active and prepared.fine is not None and not shifted
        if refined:  # the local second stage re-finds every unclicked landmark around its first-stage place
            free = [i for i in range(self.num_landmarks) if i not in clicks]
            first = coords
            by_error = self.refiner_blend is None
            refined_error = np.full(self.num_landmarks, np.nan) if by_error else None
            with self.autocast():
                for _ in range(self.refiner_passes):
                    coords = refine_points(self.refiner, prepared.fine, shape, coords, free, refined_error)
            # two estimates with partly independent errors: their weighted mean
            if by_error:  # each point weighted by the inverse of its stage's expected error²
                first_error, prob = self._ere(logits[0], net_np, shape)  # the calibrated maps, kept for the ERE below
                v1, v2 = first_error ** 2, (self.refiner_error_scale * refined_error) ** 2
                with np.errstate(invalid="ignore", divide="ignore"):
                    w = v1 / (v1 + v2)
                w = np.where(np.isfinite(w), w, 0.5)[:, None]  # no usable error for a point: the plain mean
                coords = w * coords + (1.0 - w) * first
            elif self.refiner_blend < 1.0:
                coords = self.refiner_blend * coords + (1.0 - self.refiner_blend) * first
            near = self._inside_zones(coords, zones)  # the refiner's crop may hold a clicked point: not onto it
            coords[near] = first[near]
            net_np = self.codec.to_network(coords, shape)
            clock("refiner")
        if clicks and previous is not None:  # points the correction does not concern stay where they were shown
            hold = self.shape_model.settings.hold if posterior is not None else self.hold
            net_np = self._hold_small_moves(net_np, coords, previous, clicks, shape, tuple(logits.shape[-2:]), hold,
                                            zones)
        clicked = np.zeros(self.num_landmarks, bool)
        for i, pos in clicks.items():
            coords[i] = pos  # a user's point is never moved
            clicked[i] = True
        self._check_finite(coords)
        clock("hold")
        spread = radius = None
        ere = ere_raw = ere_own = wide = doubt = None
        if self.compute_ere:
            # the doubt maps about the points shown (under the prior: the posterior's points): the network's
            # calibrated map times the anatomy's envelope given the corrections only — how far the network, kept to
            # where this landmark can lie, believes each shown point is from the truth. Not the posterior: it is
            # sharp where the anatomy agrees with itself, right or wrong (AUROC for > 20 px at 0 clicks 0.645
            # against the network map's 0.725 on aasce-spine's eval films: experiments/benchmarks/posterior_doubt.py); not the
            # network's map alone: a chain's end keeps mass at the film's other end (ere_calibration.py)
            doubt = self._doubt_maps(logits[0], clicks, shape, tempered)
            grid = tuple(doubt.shape[-2:])
            at, scale = self.codec.network_to_grid(net_np, grid), self.codec.grid_scale(shape, grid)
            ere_raw = expected_radial_error(doubt, at, scale=scale)
            ere_raw[clicked] = np.nan
            if self.ere_calibration is not None:
                ere, wide = self.ere_calibration.apply(ere_raw, len(clicks))
                # "check next" ranks one film's points: by their own share of the doubt, without the film's term
                # (the same for every point of the film, it would favour the points the anatomy links most)
                ere_own, _ = self.ere_calibration.apply(ere_raw, len(clicks), film=False)
                ere_own[clicked] = 0.0
            else:
                ere, wide = ere_raw.copy(), np.zeros(self.num_landmarks, bool)
                ere_own = ere
            ere[clicked] = 0.0  # placed by a person: no model uncertainty left
            wide &= ~clicked
            clock("ERE")
            spread = spread_covariance(doubt, at, scale=scale, threshold=self.spread_cut)
            spread[clicked] = np.nan
            if self.regions is not None:
                radius = np.where(clicked, np.nan, self.regions.for_clicks(len(clicks)))
            clock("regions")
        gain = self._expected_gain(ere_own, clicks) if ere is not None else None
        clock("check next")
        if self.heatmap == "softmax":  # the network's calibrated maps' maxima (reused when the refiner needed them)
            p = prob if prob is not None else softmax_maps(tempered)
            peak = p.flatten(-2).amax(-1)[None]
        if not clicks and fast:
            self._remember_zero_click(prepared, coords)
        clock("decode")
        return Prediction(coords, peak[0].cpu().numpy().astype(np.float64), clicked, logits[0], shape, self.input_size,
                          ere, self.temperatures, None if doubt is None else doubt.cpu().numpy(),
                          shape_prior=posterior is not None, refined=refined, spread=spread, region_radius=radius,
                          region_level=None if self.regions is None else self.regions.level, ere_raw=ere_raw,
                          ere_wide=wide, gain=gain)

    def film_features(self, image, prediction: Prediction):
        """What :mod:`familiarity` reads of a film: its size, its network input's grey levels and ``prediction``'s
        uncalibrated ERE (a prediction before any correction); None for a prediction without ERE."""
        from ..familiarity import film_features

        if prediction.ere_raw is None:
            return None
        prepared = self.prepare(image)
        return film_features(prepared.tensor.float().cpu().numpy(), prepared.original_shape, prediction.ere_raw)

    def check_film(self, image, prediction: Prediction):
        """Whether ``image`` is like the films this model's doubt was calibrated on
        (:class:`familiarity.FilmShift`), from ``prediction`` made before any correction; None when the card has no
        familiarity check or the prediction no ERE."""
        if self.familiarity is None or prediction.clicked.any():
            return None
        features = self.film_features(image, prediction)
        return None if features is None else self.familiarity.check(features)

    def _fast_after_click(self) -> bool:
        """Whether an update after a click runs only :attr:`after_click_members`: where the card names them and the
        networks run in fp32 on the CPU (a CPU without native bf16 under ``auto``, or fp32 asked for) — there the full
        ensemble and refiner take 280–830 ms an update; with bf16 they take under 200 ms and run in full."""
        return (self.after_click_members is not None and hasattr(self.model, "active") and self.device.type == "cpu"
                and self.precision == "fp32")

    def _remember_zero_click(self, prepared: PreparedImage, coords: np.ndarray) -> None:
        """Keep, for this image, the full model's fully automatic points and the after-click members' own (one more
        forward of those members, no clicks): the base an update after a click moves (:attr:`after_click_members`)."""
        k = self.num_landmarks
        self.model.active = self.after_click_members
        try:
            with self.autocast():
                logits = self.model(prepared.tensor, clicks=torch.full((1, k, 2), float("nan"), device=self.device),
                                    clicked=torch.zeros((1, k), dtype=torch.bool, device=self.device))["logits"]
        finally:
            self.model.active = None
        net, _ = self.codec.decode(logits.float().contiguous())
        member = self.codec.to_original(net[0].cpu().numpy().astype(np.float64), prepared.original_shape)
        cache = self.__dict__.setdefault("_zero_click_cache", {})
        cache[prepared.key] = (np.array(coords, np.float64), member)
        while len(cache) > 4:  # the last few images
            cache.pop(next(iter(cache)))

    def _zero_click_base(self, prepared: PreparedImage):
        """(full model's points, after-click members' points) of ``prepared`` with no click, computed once per image."""
        cache = self.__dict__.setdefault("_zero_click_cache", {})
        if prepared.key not in cache:
            self.predict(prepared)  # remembers them
        return cache[prepared.key]

    # how much of the other landmarks' expected error a correction is credited with removing (the share of their
    # variance the anatomy says it removes, times this)
    GAIN_PROPAGATION = 1.0

    def _expected_gain(self, ere: np.ndarray, clicks: dict) -> np.ndarray | None:
        """(K,) ``ere_k + β · Σ_j ere_j · r[j, k]`` for each unclicked landmark k (NaN for clicked ones), ``r`` the
        shape model's :meth:`~ShapeModel.informativeness` given the clicks — a correction fixes the point itself and,
        through the anatomy, part of the others' errors (a block of vertebrae one level off is fixed by one click in
        its middle, not by clicking the single most doubtful corner). None without a shape model."""
        sm = self.shape_model
        if sm is None:
            return None
        try:
            r = sm.informativeness(sorted(clicks))
        except (np.linalg.LinAlgError, ValueError):
            return None
        e = np.where(np.isfinite(ere), ere, 0.0)
        e[list(clicks)] = 0.0
        gain = e + self.GAIN_PROPAGATION * (r.T @ e)
        gain[list(clicks)] = np.nan
        return gain

    def _envelope_model(self) -> ShapeModel | None:
        """The shape model with the envelope's settings (τ 1, this predictor's envelope weight), or None (no shape
        model, or the envelope switched off)."""
        sm, w = self.shape_model, self.envelope_weight
        if sm is None or not w:
            return None
        if self._envelope is None or self._envelope[0] is not sm or self._envelope[1] != w:
            self._envelope = (sm, w, sm.with_settings(tau=1.0, weight=float(w), enabled=True))
        return self._envelope[2]

    def _doubt_maps(self, logits: torch.Tensor, clicks: dict, shape, tempered: torch.Tensor | None = None) -> torch.Tensor:
        """(K, h, w) float32 maps the doubt is read from: each landmark's calibrated 2-D softmax map times its
        envelope — the shape model's Gaussian given the clicks only, as ``w · N + (1 − w) · uniform`` — renormalised;
        the calibrated map alone without a shape model. A shape model that cannot be conditioned (said once) leaves
        the calibrated maps."""
        env = self._envelope_model()
        if tempered is None:
            tempered = tempered_logits(logits.float(), self.temperatures)
        if env is not None:
            idx = sorted(clicks)
            free = [i for i in range(self.num_landmarks) if i not in clicks]
            try:
                placed = np.array([clicks[i] for i in idx], np.float64).reshape(-1, 2)
                means, covs = env.condition(idx, normalise(placed, shape))
                # the envelope's Gaussian term inside its boxes (its flat floor, a constant, cancels in the softmax)
                tempered = add_prior_term(tempered, *prior_terms(env, means, covs, tuple(logits.shape[-2:]), free,
                                                                 logits.device)[1:])
            except (np.linalg.LinAlgError, ShapeModelError, FloatingPointError, ValueError) as exc:
                if self.shape_prior_problem is None:
                    self.shape_prior_problem = f"the anatomy's envelope failed ({exc}); the doubt is the network's"
                    log.warning(self.shape_prior_problem)
        return softmax_maps(tempered)

    def _decode_under_prior(self, logits: torch.Tensor, net_np: np.ndarray, clicks: dict, shape, zones=None,
                            tempered: torch.Tensor | None = None):
        """The unclicked landmarks decoded from their calibrated maps times their click-conditioned shape prior:
        (network-pixel coordinates (K, 2), posterior log-maps (K, h, w)), or None when the prior does not apply
        (no click and no zero-click use) or fails (said once; the network alone then places the points)."""
        sm = self.shape_model
        if not clicks and not sm.settings.zero_click:
            return None
        grid = tuple(logits.shape[-2:])
        if tempered is None:
            tempered = tempered_logits(logits, self.temperatures)
        free = [i for i in range(self.num_landmarks) if i not in clicks]  # a clicked point is not decoded
        try:
            if clicks:
                idx = sorted(clicks)
                placed = np.array([clicks[i] for i in idx], np.float64)
                means, covs = sm.condition(idx, normalise(placed, shape))
                rounds = 1 + sm.settings.click_rounds
            else:
                rounds = max(1, sm.settings.zero_click_rounds)
            cur = net_np  # (None after a click: the prior's own decoding is the first)
            keep_out = self._exclusion(zones if zones is not None else self._exclusion_zones(clicks, shape), shape,
                                       grid, logits.device)
            base = tempered if keep_out is None else tempered + keep_out
            # each map's maximum without the prior: a round whose prior term lies in boxes finds its argmax from the
            # boxes and this, without reading the whole map again
            base_max, base_top = base.reshape(base.shape[0], -1).max(-1)
            for r in range(rounds):
                if not clicks or r > 0:  # each landmark given all the others where they are now (iterated
                    # conditional modes), the clicked ones at the user's points
                    now = self.codec.to_original(cur, shape)
                    if clicks:
                        now[idx] = placed
                    means, covs = sm.leave_one_out(normalise(now, shape))
                # the calibrated maps (and the exclusion zones) plus the prior's Gaussian term inside its boxes; the
                # prior's flat floor, a constant per map, changes neither the argmax nor the local softmax
                _, term, index = prior_terms(sm, means, covs, grid, free, logits.device)
                fused = add_prior_term(base, term, index)
                top = None if index is None else boxed_argmax(base, base_max, base_top, term, index)
                net, _ = decode_strided_logits(fused[None], self.input_size, window=self.codec.window,
                                               heatmap="softmax", top=None if top is None else top[None])
                cur = net[0].cpu().numpy().astype(np.float64)
        except (np.linalg.LinAlgError, ShapeModelError, FloatingPointError, ValueError) as exc:
            if self.shape_prior_problem is None:
                self.shape_prior_problem = f"the shape prior failed ({exc}); the network alone places the points"
                log.warning(self.shape_prior_problem)
            return None
        if not np.isfinite(cur).all():
            return None
        return cur, fused

    # how far from a clicked point another landmark may not be decoded, as a fraction of their distance in the
    # anatomy's mean shape
    EXCLUSION = 0.35
    EXCLUSION_REACH = 4.0  # … of at most this many times the median distance between nearest landmarks

    def _exclusion_zones(self, clicks: dict, shape):
        """``(at (n, 2), radius (K, n))``: the clicked points (original pixels, in ``sorted(clicks)`` order) and how
        close to each an unclicked landmark may not be decoded (0 for the clicked ones); None without clicks or a shape
        model. See :meth:`_exclusion`."""
        sm = self.shape_model
        if not clicks or sm is None:
            return None
        idx = sorted(clicks)
        big_h, big_w = float(shape[0]), float(shape[1])
        at = normalise(np.array([clicks[i] for i in idx], np.float64), shape) * [big_h, big_w]  # (n, 2)
        key = (big_h, big_w, self.EXCLUSION_REACH)
        if self._zone_geometry is None or self._zone_geometry[0] is not sm or self._zone_geometry[1] != key:
            # once per film size (and shape model)
            mean = sm.mean.reshape(-1, 2) * [big_h, big_w]  # (K, 2) the mean shape in this film's pixels
            pair = np.hypot(*(mean[:, None, :] - mean[None, :, :]).transpose(2, 0, 1))  # (K, K)
            np.fill_diagonal(pair, np.inf)
            # a landmark far from the click in the anatomy is never decoded near it anyway; capping the distance the
            # zone is a fraction of keeps an absurd click from blanking the true places of those landmarks
            capped = np.minimum(pair, self.EXCLUSION_REACH * float(np.median(pair.min(axis=1))))
            self._zone_geometry = (sm, key, capped)
        capped = self._zone_geometry[2]
        radius = self.EXCLUSION * capped[:, idx]  # (K, n)
        radius[idx] = 0.0  # a clicked landmark is placed, not decoded
        return at, radius

    @staticmethod
    def _inside_zones(points: np.ndarray, zones) -> np.ndarray:
        """(K,) bool: each point lies inside some click's exclusion zone (:meth:`_exclusion_zones`); all False
        without zones."""
        if zones is None:
            return np.zeros(len(points), bool)
        at, radius = zones
        return (np.hypot(*(points[:, None, :] - at[None]).transpose(2, 0, 1)) < radius).any(axis=1)

    def _exclusion(self, zones, shape, grid, device) -> torch.Tensor | None:
        """(K, h, w) float32 to add to the logits after a click: −1e4 in the cells of every unclicked landmark j that
        lie closer to a clicked point y_i than ``EXCLUSION`` × the distance between j and i in the anatomy's mean
        shape (in this film's pixels), 0 elsewhere — a corner cannot sit on another landmark the user placed, which
        is how a neighbour's corner collapsed onto the corrected one (issue 34). The mean shape, not the shape given
        the click: an absurd click must not widen the zone over the other landmarks' true places. None without
        clicks or a shape model (``zones`` None: :meth:`_exclusion_zones`)."""
        if zones is None:
            return None
        at, radius = zones
        big_h, big_w = float(shape[0]), float(shape[1])
        h, w = grid
        rows = (np.arange(h) + 0.5) / h * big_h
        cols = (np.arange(w) + 0.5) / w * big_w
        out = np.zeros((len(radius), h, w), np.float32)
        for n_i, (r0, c0) in enumerate(at):
            reach = float(radius[:, n_i].max())  # only the cells within the widest of this click's zones
            i0, i1 = np.searchsorted(rows, [r0 - reach, r0 + reach])
            j0, j1 = np.searchsorted(cols, [c0 - reach, c0 + reach])
            if i0 >= i1 or j0 >= j1:
                continue
            near = (rows[i0:i1, None] - r0) ** 2 + (cols[None, j0:j1] - c0) ** 2  # (box h, box w)
            box = out[:, i0:i1, j0:j1]
            box[near[None] < radius[:, n_i, None, None] ** 2] = -1e4
        return torch.as_tensor(out, device=device)

    def _hold_small_moves(self, net_np, coords, previous, clicks, shape, grid, hold: float, zones=None):
        """``hold``: each unclicked landmark that moved less than ``hold`` map cells from where it was shown
        (``previous``) is put back there (``coords`` edited in place; returns the network-pixel coordinates to match,
        about which the ERE is read) — unless that place lies in a click's exclusion ``zones``. The shape prior's
        setting under the prior, :attr:`hold` without it."""
        if hold <= 0:
            return net_np
        sy, sx = self.codec.grid_scale(shape, grid)
        step = np.hypot((coords[:, 0] - previous[:, 0]) / sy, (coords[:, 1] - previous[:, 1]) / sx)
        back = np.isfinite(step) & (step < hold)
        back[list(clicks)] = False
        back &= ~self._inside_zones(previous, zones)  # never held back onto a clicked point (the user put it there)
        if not back.any():
            return net_np
        coords[back] = previous[back]
        net_np = net_np.copy()
        net_np[back] = self.codec.to_network(previous[back], shape)
        return net_np

    def _ensure_eval(self) -> None:
        """Networks in training mode would answer from each film's own batch statistics and overwrite their stored
        ones with every prediction (e.g. after ``torch.onnx.export`` of a wrapper made in training mode, which
        restores that mode on the network): put back in eval mode, said once."""
        for name, net in (("network", self.model), ("refiner", self.refiner)):
            if isinstance(net, torch.nn.Module) and net.training:
                log.warning("%s: its %s was in training mode; predicting in eval mode", self.name, name)
                net.eval()

    def _check_finite(self, coords: np.ndarray) -> None:
        """A result with non-finite coordinates is an error, never a result (NaN weights or logits)."""
        bad = np.flatnonzero(~np.isfinite(coords).all(axis=1))
        if len(bad):
            names = ", ".join(self.schema.landmarks[i] for i in bad[:3]) + (", …" if len(bad) > 3 else "")
            raise PredictionError(
                f"the model '{self.name}' returned non-finite coordinates for {len(bad)} "
                f"landmark{'s' if len(bad) != 1 else ''} ({names}): the weights file may be corrupt")

    def _ere(self, logits: torch.Tensor, net_coords: np.ndarray, shape, prob: torch.Tensor | None = None):
        """Expected radial error (McCouat & Voiculescu 2022) of each landmark about ``net_coords`` from the
        calibrated 2-D softmax of its stride-4 logits, in original pixels (rows and columns scaled separately);
        returns it with the calibrated maps (float32 torch, on the model's device; ``prob``: those maps, already
        computed for these logits)."""
        grid = tuple(logits.shape[-2:])
        if prob is None:
            prob = softmax_maps(logits.float(), self.temperatures)
        pred_grid = self.codec.network_to_grid(net_coords, grid)
        return expected_radial_error(prob, pred_grid, scale=self.codec.grid_scale(shape, grid)), prob


def native_cpu_bf16() -> bool:
    """True when this CPU computes bf16 convolutions natively (oneDNN's own test: AVX512-BF16 / AMX); elsewhere
    bf16 autocast is emulated and slower than float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# below this log ratio of the Gaussian term to the flat floor a cell's prior is the floor to float32 precision
# (log1p(e⁻²⁰) = 2·10⁻⁹): the torch prior evaluates each landmark only inside the box where the term exceeds it
PRIOR_CUTOFF = 20.0
# … and the whole grid at once when those boxes (all of one size, the largest) would cover more than this share of it
PRIOR_DENSE_SHARE = 0.5


def prior_terms(shape_model: ShapeModel, means, covs, grid, rows, device):
    """The robust prior of :meth:`ShapeModel.log_prior_on_grid` in torch, as ``(floor, term, index)``: the flat floor
    log(1 − w) and the Gaussian term log1p(w N / (1 − w)) (float32) that adds to it — evaluated in one batched pass
    over a box of the same size for every landmark (the largest of their boxes where the term exceeds e⁻²⁰, each placed
    on its own landmark and kept inside the grid): ``term`` (K, bh, bw) and ``index`` (K, bh·bw) the cells' flat
    indices in (h·w); the whole grid when those boxes would cover most of it (``term`` (K, h, w), ``index`` None); no
    term at all (None, None) when the prior is flat or no box meets the grid. Landmarks not in ``rows`` have no term.
    After a click the boxes are a few per cent of the grid (issue 39)."""
    h, w = int(grid[0]), int(grid[1])
    floor, inv, log_c, cov = shape_model.grid_terms(covs)
    k = len(means)
    if inv is None:
        return floor, None, None
    log_c = np.array(log_c, np.float64)
    if rows is not None and len(rows) < k:  # softplus(-1e30) = 0: no term, without a masked write
        keep = np.zeros(k, bool)
        keep[list(rows)] = True
        log_c[~keep] = -1e30
    means = np.asarray(means, np.float64)
    # each landmark's box: the cells whose centre lies within the ellipse's extent where log_c − ½ d²_M > −cutoff
    radius2 = np.maximum(2.0 * (log_c + PRIOR_CUTOFF), 0.0)
    half = np.sqrt(radius2[:, None] * np.stack([cov[:, 0, 0], cov[:, 1, 1]], 1))  # (K, 2) in normalised units
    size = np.array([h, w], np.float64)
    lo = np.clip(np.ceil((means - half) * size - 0.5), 0, size)
    hi = np.clip(np.floor((means + half) * size - 0.5) + 1, 0, size)
    extent = np.where(radius2[:, None] > 0, np.maximum(hi - lo, 0), 0).astype(np.int64)
    bh, bw = int(extent[:, 0].max()), int(extent[:, 1].max())
    if bh == 0 or bw == 0:
        return floor, None, None
    dense = bh * bw > PRIOR_DENSE_SHARE * h * w
    f32 = dict(dtype=torch.float32, device=device)
    m = torch.as_tensor(means, **f32)
    inv_t = torch.as_tensor(inv, **f32)
    if dense:
        r_idx = torch.arange(h, device=device).expand(k, h)
        c_idx = torch.arange(w, device=device).expand(k, w)
    else:  # one box size for all, each placed over its own box and kept inside the grid
        r0 = torch.as_tensor(np.minimum(lo[:, 0], h - bh).astype(np.int64), device=device)
        c0 = torch.as_tensor(np.minimum(lo[:, 1], w - bw).astype(np.int64), device=device)
        r_idx = r0[:, None] + torch.arange(bh, device=device)
        c_idx = c0[:, None] + torch.arange(bw, device=device)
    dr = (r_idx.to(torch.float32) + 0.5) / h - m[:, 0:1]  # (K, h or bh)
    dc = (c_idx.to(torch.float32) + 0.5) / w - m[:, 1:2]  # (K, w or bw)
    row_term = torch.as_tensor(log_c, **f32)[:, None] - (0.5 * inv_t[:, 0:1]) * dr * dr
    col_term = -(0.5 * inv_t[:, 1:2]) * dc * dc
    # z = log_c − ½ (x − m)ᵀ Σ⁻¹ (x − m): row term + column term − i01 · dr · dc (a batched outer product)
    z = torch.baddbmm(row_term[:, :, None], (-inv_t[:, 2:3] * dr)[:, :, None], dc[:, None, :])
    z.add_(col_term[:, None, :])
    # log1p(exp(z)) = softplus(z); torch returns z itself above 20, where they agree to float32 precision
    term = torch.nn.functional.softplus(z)
    if dense:
        return floor, term, None
    return floor, term, (r_idx[:, :, None] * w + c_idx[:, None, :]).reshape(k, -1)


def add_prior_term(maps: torch.Tensor, term, index) -> torch.Tensor:
    """``maps`` (K, h, w) plus a prior's Gaussian term from :func:`prior_terms` (without its floor, a constant that
    neither a softmax nor an argmax sees); ``maps`` itself when there is no term, else a new tensor."""
    if term is None:
        return maps
    if index is None:
        return maps + term
    k = maps.shape[0]
    return maps.reshape(k, -1).clone().scatter_add_(1, index, term.reshape(k, -1)).view(maps.shape)


def boxed_argmax(base: torch.Tensor, base_max: torch.Tensor, base_top: torch.Tensor, term: torch.Tensor,
                 index: torch.Tensor) -> torch.Tensor:
    """(K,) the flat argmax of each map of ``base`` plus a non-negative ``term`` added in a box of cells (``index``,
    from :func:`prior_terms`), given each base map's maximum and its argmax: the box's best cell where it reaches the
    base maximum, else the base argmax (outside the box nothing was added; where the base argmax lies in the box, the
    box's best is at least as high). Ties go to the lower index, as a whole-map argmax does."""
    k = base.shape[0]
    boxed = base.reshape(k, -1).gather(1, index) + term.reshape(k, -1)
    box_max, at = boxed.max(-1)
    box_top = index.gather(1, at[:, None])[:, 0]
    tie = torch.minimum(box_top, base_top)
    return torch.where(box_max > base_max, box_top, torch.where(box_max < base_max, base_top, tie))


def log_prior_on_grid(shape_model: ShapeModel, means, covs, grid, rows, device) -> torch.Tensor:
    """:meth:`ShapeModel.log_prior_on_grid` in torch (float32, (K, h, w)): the floor plus the Gaussian term of
    :func:`prior_terms`. Equal to the whole-grid evaluation to float32 precision and to the numpy reference within 1e-5
    (tests/test_shape_model.py)."""
    h, w = int(grid[0]), int(grid[1])
    k = len(means)
    floor, term, index = prior_terms(shape_model, means, covs, grid, rows, device)
    if term is None:
        return torch.full((k, h, w), floor, dtype=torch.float32, device=device)
    if index is None:
        return term.add_(floor)
    out = torch.full((k, h * w), floor, dtype=torch.float32, device=device)
    out.scatter_(1, index, term.reshape(k, -1).add_(floor))
    return out.view(k, h, w)


def _load_state(model, state, path, schema):
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape_bad:
        cls_key = getattr(model, "classifier_weight", "")  # the per-landmark classifier each model names
        if cls_key in state and cls_key in own and state[cls_key].shape[0] != own[cls_key].shape[0]:
            raise PredictionError(
                f"{Path(path).name} holds a model for {state[cls_key].shape[0]} landmarks, but the landmark set "
                f"'{schema.name}' has {schema.num_landmarks}: it is for a different landmark set")
        raise PredictionError(
            f"{Path(path).name} does not match the model architecture in its config "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shape_bad)} mis-shaped tensors, e.g. "
            f"{(missing + unexpected + shape_bad)[:3]})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
