"""The layer-sync adapter: one session's landmarks as napari layers, kept in step with the session.

:class:`LandmarkLayers` listens to a :class:`~napari_interactive_landmarks.inference.session.LandmarkSession`'s
change events and writes its state into the layers it owns — the landmark Points layer (with the ERE cue on
the points), the outline, the measurement lines, the uncertainty map, the labels and the conformal regions (an
ellipse outline around every unpinned point) — and turns what a user
does to the Points layer back into session calls: a drag pins the moved points (``session.pin``), and then
``on_edit`` tells the panel that an inference is wanted. Adding or deleting points is refused (one point per
landmark) and undone.

The panel (``_widget.LandmarkWidget``) owns the buttons, the tables and the scheduling of inference; it does not
touch the layers. Coordinates are (row, col) original pixels; the layers carry the image layer's
``scale``/``translate`` so that they overlay it.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from napari.utils.colormaps.standardize_color import transform_color
from qtpy.QtCore import QTimer

from ..inference.session import LandmarkSession, SessionError
from ..label_placement import BrightBackground, place_chain_labels, place_labels, text_size_in_data
from ..regions import region_area
from ._layers import META_KEY, PINNED_SIZE_FACTOR, point_size, points_layer_kwargs, skeleton_shapes

LABEL_COLOR = "#ffffff"
DARK_LABEL_COLOR = "#0d1b2a"  # a label that found no place off bright bone is written dark instead of white
OUTLINE_COLOR = "#ffd54f"
TWISTED_OUTLINE_COLOR = "#ff5252"
MEASUREMENT_COLOR = "#ff4081"
CUE_COLOR = (1.0, 0.32, 0.32, 1.0)
REGION_COLOR = (0.5, 0.87, 0.92, 0.55)  # the predicted points' cyan, lighter and half transparent: many overlap

NEXT_REGION_COLOR = (1.0, 0.32, 0.32, 1.0)
REGION_MAX_FILM_SHARE = 0.25  # a region larger than this share of the film is not drawn  # the suggested next point's region, as its red cue, opaque
REGION_VERTICES = 32  # vertices of each region's outline
# the points layer's feature columns that carry each point's region (what File › Save writes); its centre is the point
REGION_FEATURES = (("region_major_px", "semi_axes_px", 0), ("region_minor_px", "semi_axes_px", 1),
                   ("region_angle_deg", "angle_deg", None), ("region_area_px2", "area_px2", None))
LABEL_FONT_SIZE = 10  # screen pixels; the labels' boxes in data units follow the zoom
RELABEL_AFTER_ZOOM_MS = 150


def _action(event) -> str:
    a = getattr(event, "action", None)
    return str(getattr(a, "value", a))


def as_vectors(lines) -> np.ndarray:
    """Line segments [(p, q), ...] → napari Vectors data (N, 2, 2): start point and projection q − p."""
    if not len(lines):
        return np.zeros((0, 2, 2))
    seg = np.asarray(lines, dtype=float).reshape(-1, 2, 2)
    return np.stack([seg[:, 0], seg[:, 1] - seg[:, 0]], axis=1)


def quietly_set(layer, **values) -> None:
    """Set attributes of a layer this adapter alone owns (outline, lines, labels, map) without its ``data``
    event: napari answers that event by recomputing every layer's extent and the dims (~8 ms a layer on the
    2-core box, on the main thread), and these layers lie on the image, so the extent cannot change."""
    with layer.events.data.blocker():
        for key, value in values.items():
            setattr(layer, key, value)


def region_outlines(centres, spread, radius, highlight=None, width: float = 1.0, n: int = REGION_VERTICES,
                    bounds=None) -> tuple[np.ndarray, np.ndarray]:
    """(segments (N, 2, 2), RGBA colours (N, 4)) of the regions' outlines: ``n`` segments per landmark with a finite
    region (none for a pinned point, whose radius is NaN), the vertices of
    :func:`~napari_interactive_landmarks.regions.ellipse_polygon` (computed for all landmarks at once). The
    ``highlight`` landmark's outline is red and doubled (a second ring 0.6 line ``width`` outside the first, along
    the outline's normal: the two read as one thicker line; the Vectors layer has one line width for all). With
    ``bounds`` (H, W) every vertex is clipped to the film: a region larger than the film (an honest one, for a point
    the model barely knows) is drawn as its part on the film, bounded by the film's edges, and the view still fits
    the film."""
    centres, spread, radius = (np.asarray(a, np.float64) for a in (centres, spread, radius))
    ok = np.isfinite(radius) & np.isfinite(spread).all(axis=(1, 2)) & np.isfinite(centres).all(1)
    ks = np.flatnonzero(ok)
    vals, vecs = np.linalg.eigh(spread[ks]) if len(ks) else (np.zeros((0, 2)), np.zeros((0, 2, 2)))
    good = (vals > 0).all(1)
    ks, vals, vecs = ks[good], vals[good], vecs[good]
    q = radius[ks]
    if not len(ks):
        return np.zeros((0, 2, 2)), np.zeros((0, 4))
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=-1)  # (n, 2)
    axes = q[:, None] * np.sqrt(vals)  # (m, 2) semi-axes along the eigenvectors
    poly = centres[ks][:, None] + np.einsum("knj,kij->kni", circle[None] * axes[:, None], vecs)  # as ellipse_polygon
    if highlight is not None and highlight in ks:  # the doubled ring: the outline moved out by 0.6 line widths
        j = int(np.flatnonzero(ks == highlight)[0])
        normal = (circle / axes[j]) @ vecs[j].T
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        poly = np.concatenate([poly, poly[j:j + 1] + 0.6 * width * normal[None]])
        ks = np.append(ks, highlight)
    segs = np.stack([poly, np.roll(poly, -1, axis=1)], axis=2).reshape(-1, 2, 2)
    colors = np.repeat(np.where((ks == highlight)[:, None], transform_color(NEXT_REGION_COLOR),
                                transform_color(REGION_COLOR)), n, axis=0)
    if bounds is not None:  # clipped to the film: the part of an outline off the film runs along its edge
        lo, hi = -0.5, np.asarray(bounds, np.float64) - 0.5
        segs = np.clip(segs, lo, hi)
        keep = np.abs(segs[:, 0] - segs[:, 1]).sum(axis=1) > 1e-9  # a segment wholly past a corner: a point
        segs, colors = segs[keep], colors[keep]
    return segs, colors


def ere_cue(ere, pinned, idx):
    """(border widths, border colours) for the points in layer order ``idx``: red and thicker for the most
    uncertain unpinned points (top 20 % by ERE, or the highest when few are left); None without ERE."""
    if ere is None:
        return None
    e_pts = ere[idx]
    free = ~pinned[idx]
    top = np.zeros(len(idx), bool)
    if free.any() and np.isfinite(e_pts[free]).any():
        cut = np.nanpercentile(np.where(free, e_pts, np.nan), 80) if free.sum() > 4 else np.nanmax(e_pts[free])
        top = free & (e_pts >= cut)
    colors = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (len(idx), 1))
    colors[top] = CUE_COLOR
    return np.where(top, 0.3, 0.1), colors


class LandmarkLayers:
    """The napari layers of one session (points, outline, measurement lines, uncertainty map, labels).

    Args:
        viewer: the napari viewer.
        session: the session whose state is drawn; the adapter subscribes to its change events.
        image_layer: the image the landmarks belong to (its scale/translate place every layer).
        on_edit: called with ``{landmark index: (row, col)}`` after a user's drag was pinned in the session
            (the panel schedules the re-run).
        notify: ``notify(kind, message)`` with kind ``"warning"``/``"info"``, for refused edits.
        show_uncertainty, show_labels, show_regions: initial visibility of the uncertainty map, of the labels and of
            the conformal regions.
        all_regions: draw every unpinned point's region, not only those of the points in doubt.
    """

    def __init__(self, viewer, session: LandmarkSession, image_layer, *, on_edit: Callable[[dict], None],
                 notify: Callable[[str, str], None], show_uncertainty: bool = True, show_labels: bool = True,
                 show_regions: bool = True, all_regions: bool = False):
        self.viewer = viewer
        self.session = session
        self.image_layer = image_layer
        self.on_edit = on_edit
        self.notify = notify
        self._show_uncertainty = bool(show_uncertainty)
        self._show_labels = bool(show_labels)
        self._show_regions = bool(show_regions)
        self._all_regions = bool(all_regions)  # every unpinned point's region, not only those in doubt
        self.points: object | None = None
        self.outline = None
        self.measurement_lines = None
        self.uncertainty = None
        self.labels = None
        self.label_lines = None  # leader lines from a point to its label, where the label had to be set off
        self.label_placement = None  # the last LabelPlacement (boxes in data units)
        self.regions = None  # the conformal regions' outlines (a Vectors layer); none for a model without regions
        self._region_colors = np.zeros((0, 4))
        self.region_sync_ms: list = []  # how long each update of the regions layer took (main thread; not its creation)
        self._background = (None, None)  # (key, BrightBackground of the film): white labels avoid bright bone
        self.measurements: dict = {}
        self.corner_problems: dict = {}  # vertebra → why its labelled corners are out of order
        self._outline_colors: list = []
        self._label_line_colors: list = []
        # the schema's edges that are not a vertebra's own sides (those are drawn as its polygon)
        vertebra_of = {int(m): g for g, members in session.schema.groups.items() if len(members) == 4 for m in members}
        self._edges_outside_vertebrae = [(a, b) for a, b in session.schema.edges
                                         if a not in vertebra_of or vertebra_of[a] != vertebra_of.get(b)]
        self._rest = QTimer()
        self._rest.setSingleShot(True)
        self._rest.setInterval(0)
        self._rest.timeout.connect(self._sync_rest)
        # labels keep their size on the screen: after a zoom they are placed again (once the zoom has settled)
        self._relabel = QTimer()
        self._relabel.setSingleShot(True)
        self._relabel.setInterval(RELABEL_AFTER_ZOOM_MS)
        self._relabel.timeout.connect(self._relabel_now)
        self._camera = self._viewer_camera()
        if self._camera is not None:
            self._camera.events.zoom.connect(self._on_zoom)
        self._unsubscribe = session.subscribe(self._on_session_changed)

    # ------------------------------------------------------------------ placement
    @property
    def _placement(self):
        lyr = self.image_layer
        if lyr is None:
            return (1.0, 1.0), (0.0, 0.0)
        return tuple(float(v) for v in lyr.scale[-2:]), tuple(float(v) for v in lyr.translate[-2:])

    def _alive(self, layer) -> bool:
        return layer is not None and layer in self.viewer.layers

    def _add_below_points(self, layer):
        """Move a new layer just under the landmark points (which stay on top and active)."""
        if self._alive(self.points):
            self.viewer.layers.move(self.viewer.layers.index(layer), self.viewer.layers.index(self.points))
            self.viewer.layers.selection.active = self.points

    # ------------------------------------------------------------------ session → layers
    def _on_session_changed(self, change: str) -> None:
        if change == "image":
            return
        if change == "pinned":
            return  # a hand-placed point is already where the layer shows it; the model's answer follows
        self.sync()

    def sync(self) -> None:
        """Write the session's state into the layers: the points at once, the outline, labels, lines and map on
        the event loop's next pass — the viewer stays responsive between the two (each under ~20 ms on the
        2-core box, where the whole took ~40 ms in one block)."""
        s = self.session
        if not s.detected:
            return
        self.measurements = s.measurements()
        self._sync_points()
        self._rest.start()

    def _sync_rest(self) -> None:
        if not (self._alive(self.points) and self.session.detected):
            return
        self._sync_outline()
        self._sync_labels()
        self._sync_measurement_lines()
        self._sync_uncertainty()
        self._sync_regions()

    @property
    def pending(self) -> bool:
        """The second half of a sync is still to run."""
        return self._rest.isActive()

    def flush(self) -> None:
        """Run a pending second half now (scripts and tests that read the layers right after a change)."""
        if self._rest.isActive():
            self._rest.stop()
            self._sync_rest()

    def _sync_points(self):
        s = self.session
        scale, translate = self._placement
        data, kwargs = points_layer_kwargs(
            s.coords, list(s.schema.landmarks), pinned=s.pinned, scores=s.scores, landmark_set=s.schema.name,
            model=s.predictor.name, image_path=s.image_path, image_shape=list(s.image_shape),
            spacing=None if s.spacing is None else list(np.broadcast_to(s.spacing, 2)),
            name=f"landmarks ({s.predictor.name})")
        kwargs.pop("text", None)  # the labels are their own layer (one per vertebra / abbreviations)
        ere = s.ere
        idx = kwargs["features"]["index"].to_numpy()
        if ere is not None:  # per-point ERE goes into the same features write (shown on hover)
            kwargs["features"]["ere"] = ere[idx]
            kwargs["feature_defaults"] = {**kwargs["feature_defaults"], "ere": np.nan}
        regions = s.region_arrays()  # each point's region in its features (File › Save writes them)
        if regions is not None:
            for col, key, j in REGION_FEATURES:
                kwargs["features"][col] = (regions[key][:, j] if j is not None else regions[key])[idx]
                kwargs["feature_defaults"] = {**kwargs["feature_defaults"], col: np.nan}
        kwargs["metadata"][META_KEY]["region_level"] = s.region_level
        cue = ere_cue(ere, s.pinned, idx)
        if not self._alive(self.points):
            kwargs.update(scale=scale, translate=translate)
            if cue is not None:
                kwargs.update(border_width=cue[0], border_color=cue[1])
            self.points = self.viewer.add_points(data, **kwargs)
            self.points.events.data.connect(self._on_points_data)
            self.points.mode = "select"
            return
        lyr = self.points
        selected = set(lyr.selected_data)
        # Each property set below would re-render the layer on its own (5 renders, ~60 ms on the 2-core box).
        # With the layer's events held, the properties are set silently and the layer is refreshed and
        # announced once: one render, one data event for the viewer and any other listener (not for us).
        with lyr.events.blocker_all():
            lyr.data = data
            lyr.features = kwargs["features"]
            # each setter below re-slices the layer even with its events held: only what changed
            if len(lyr.size) != len(kwargs["size"]) or not np.array_equal(lyr.size, kwargs["size"]):
                lyr.size = kwargs["size"]
            if cue is not None:
                if len(lyr.border_width) != len(cue[0]) or not np.array_equal(lyr.border_width, cue[0]):
                    lyr.border_width = cue[0]
                if len(lyr.border_color) != len(cue[1]) or not np.allclose(lyr.border_color, cue[1]):
                    lyr.border_color = cue[1]
            lyr.selected_data = {i for i in selected if i < len(data)}  # (face colours follow the features write)
            meta = kwargs["metadata"][META_KEY]
            if (lyr.metadata or {}).get(META_KEY) != meta:  # e.g. a new pixel spacing (what File › Save writes)
                lyr.metadata = {**(lyr.metadata or {}), META_KEY: meta}
        lyr.refresh()
        with lyr.events.data.blocker(self._on_points_data):
            lyr.events.data(value=lyr.data, action="changed", data_indices=tuple(range(len(data))),
                            vertex_indices=((),) * len(data))

    def _outline_segments(self):
        """(segments (N, 2, 2), colours (N,)) of the outline: each vertebra as a closed polygon in
        non-crossing corner order (red when its labelled corners are out of order: a model error to check),
        plus the schema's other edges (the cephalometric lines)."""
        from ..measurements.outline import corner_order_problems, vertebra_outlines

        s = self.session
        coords = s.coords
        segs, colors = [], []
        names, polygons = vertebra_outlines(s.schema, coords)
        problems = corner_order_problems(s.schema, coords) if names else {}
        for name, poly in zip(names, polygons):
            if np.isfinite(poly).all():
                for a in range(4):
                    segs.append((poly[a], poly[(a + 1) % 4]))
                    colors.append(TWISTED_OUTLINE_COLOR if name in problems else OUTLINE_COLOR)
        for seg in skeleton_shapes(coords, self._edges_outside_vertebrae):
            segs.append((seg[0], seg[1]))
            colors.append(OUTLINE_COLOR)
        self.corner_problems = problems
        return segs, colors

    def _sync_outline(self):
        s = self.session
        segs, colors = self._outline_segments()
        if not segs and not self._alive(self.outline):
            return
        vectors = as_vectors(segs)
        if not self._alive(self.outline):
            scale, translate = self._placement
            # a Vectors layer, not Shapes: updating 68 line shapes re-triangulates them (hundreds of ms on the
            # main thread); vectors update in a few ms
            self.outline = self.viewer.add_vectors(
                vectors, edge_color=colors or OUTLINE_COLOR, edge_width=max(1.0, max(s.image_shape) / 600),
                length=1.0, vector_style="line", name=f"outline ({s.predictor.name})", scale=scale,
                translate=translate, opacity=0.7)
            self._add_below_points(self.outline)
        elif not np.array_equal(self.outline.data, vectors) or colors != self._outline_colors:
            quietly_set(self.outline, data=vectors)
            if colors != self._outline_colors:  # a refresh of its own: only when a vertebra turns red or back
                self.outline.edge_color = colors
        self._outline_colors = colors

    def _viewer_camera(self):
        scene = getattr(self.viewer, "scene", None)  # napari ≥ 0.9: viewer.scene.camera (viewer.camera deprecated)
        if scene is not None and hasattr(scene, "camera"):
            camera = scene.camera
        else:
            camera = getattr(self.viewer, "camera", None)
        return camera if camera is not None and hasattr(camera, "events") else None

    def _on_zoom(self, event=None) -> None:
        if self._alive(self.labels):
            self._relabel.start()

    def _relabel_now(self) -> None:
        if self._alive(self.points) and self._alive(self.labels) and self.session.detected:
            self._sync_labels()

    def _label_anchors(self):
        """(anchors (N, 2), short texts, full names, preferred sides (N, 2), soft obstacles (K, 4)) of the labels to
        draw: a vertebra's name once, at the middle of its left side, preferably on the left (over soft tissue,
        not over bright bone; the vertebrae's boxes are to be avoided); otherwise each landmark's abbreviation at
        its point, preferably away from the landmarks' centroid (on the outside of the profile)."""
        s = self.session
        coords = s.coords
        groups = s.schema.group_labels(coords)
        if groups:
            anchors, names, boxes = [], [], []
            for g, (r, _c), members in groups:
                pts = coords[list(members)]
                pts = pts[np.isfinite(pts).all(1)]
                anchors.append((r, float(pts[:, 1].min())))
                boxes.append((*pts.min(0), *pts.max(0)))
                names.append(g)
            n = len(names)
            return (np.asarray(anchors, float).reshape(-1, 2), names, names, np.tile([0.0, -1.0], (n, 1)),
                    np.asarray(boxes, float).reshape(-1, 4))
        ok = np.flatnonzero(np.isfinite(coords).all(1))
        pts = coords[ok]
        if not len(pts):
            return np.zeros((0, 2)), [], [], np.zeros((0, 2)), None
        away = pts - pts.mean(0)
        return (pts, [s.schema.short_label(int(i)) for i in ok], [s.schema.full_name(int(i)) for i in ok], away, None)

    def _text_size(self):
        """(line height, em) of a label in the points' data units at the current zoom."""
        camera = self._camera
        zoom = float(getattr(camera, "zoom", 1.0) or 1.0) if camera is not None else 1.0
        scale, _ = self._placement
        return text_size_in_data(LABEL_FONT_SIZE, zoom, scale)

    def _label_background(self):
        """A :class:`BrightBackground` of the film as displayed (its contrast limits), made once per film and
        contrast; None when there is no 2-D film to read."""
        lyr = self.image_layer
        if lyr is None:
            return None
        try:
            limits = tuple(float(v) for v in lyr.contrast_limits)
            key = (id(lyr.data), limits, bool(getattr(lyr, "rgb", False)))
            if self._background[0] != key:
                data = lyr.data[0] if getattr(lyr, "multiscale", False) else lyr.data
                if getattr(lyr, "rgb", False):
                    limits = None
                if np.ndim(data) != (3 if getattr(lyr, "rgb", False) else 2):
                    return None
                step = max(1, int(np.ceil(max(data.shape[:2]) / 512)))
                self._background = (key, BrightBackground(np.asarray(data[::step, ::step]), limits, subsampled=step))
            return self._background[1]
        except Exception:  # an image we cannot read cheaply: place the labels without it
            return None

    def _label_points(self):
        """(positions (N, 2), short texts, full names, placement) of the labels to draw, placed so that no label
        covers another or a point (:func:`~napari_interactive_landmarks.label_placement.place_labels`)."""
        s = self.session
        anchors, text, full, preferred, obstacles = self._label_anchors()
        coords = s.coords
        ok = np.isfinite(coords).all(1)
        size = point_size(s.image_shape)
        lh, cw = self._text_size()
        # a point is drawn `size` across (corrected ones larger), and never smaller than a few screen pixels
        radius = np.maximum(np.where(s.pinned, PINNED_SIZE_FACTOR, 1.0)[ok] * size / 2 * 1.1, 0.25 * lh)
        bounds = (0.0, 0.0, float(s.image_shape[0]), float(s.image_shape[1]))
        if obstacles is not None:  # vertebrae: a column on the left, T1 … L5 from top to bottom, each by its own
            placement = place_chain_labels(anchors, text, coords[ok], text_size=(lh, cw), point_radius=radius,
                                           bounds=bounds)
        else:
            placement = place_labels(anchors, text, coords[ok], text_size=(lh, cw), point_radius=radius,
                                     preferred=preferred, obstacles=obstacles, background=self._label_background(),
                                     bounds=bounds)
        return placement.centers, text, full, placement

    def _sync_labels(self):
        s = self.session
        pos, text, full, placement = self._label_points()
        self.label_placement = placement
        flagged = getattr(self, "corner_problems", {}) or {}
        background = self._label_background()
        bright = np.zeros(len(text), bool)
        if background is not None and len(text):
            bright = background(placement.boxes) > 0.5
        colors = [TWISTED_OUTLINE_COLOR if t in flagged else DARK_LABEL_COLOR if b else LABEL_COLOR
                  for t, b in zip(text, bright)]
        features = {"text": text, "name": full, "color": colors}
        self._sync_label_lines(placement, [c for c, lead in zip(colors, placement.leader) if lead])
        if not self._alive(self.labels):
            scale, translate = self._placement
            self.labels = self.viewer.add_points(
                pos, features=features, name=f"labels ({s.predictor.name})", scale=scale, translate=translate,
                size=0.0, face_color="transparent", border_width=0, visible=self._show_labels,
                canvas_size_limits=(0, 0),  # only the text is drawn (no dot at its centre)
                text={"string": "{text}", "size": LABEL_FONT_SIZE, "color": {"feature": "color"}, "anchor": "center"})
            self.labels.editable = False
            self._add_below_points(self.labels)
        elif (len(pos) == len(self.labels.data) and list(self.labels.features["text"]) == text
              and list(self.labels.features["color"]) == colors):
            if not np.array_equal(self.labels.data, pos):
                quietly_set(self.labels, data=pos)  # same labels, new places: one write (none where none moved)
        else:
            quietly_set(self.labels, data=pos, features=features)

    def _sync_label_lines(self, placement, colors):
        """The leader lines of the labels set off from their points (a Vectors layer, drawn under the points)."""
        vectors = as_vectors(placement.leaders)
        if not self._alive(self.label_lines):
            if not len(vectors):
                return
            s = self.session
            scale, translate = self._placement
            self.label_lines = self.viewer.add_vectors(
                vectors, edge_color=colors, edge_width=max(1.0, max(s.image_shape) / 1000), length=1.0,
                vector_style="line", name=f"label lines ({s.predictor.name})", scale=scale, translate=translate,
                opacity=0.8, visible=self._show_labels)
            self.label_lines.editable = False
            self._add_below_points(self.label_lines)
            self._label_line_colors = colors
            return
        if np.array_equal(self.label_lines.data, vectors) and colors == self._label_line_colors:
            return  # nothing moved: no write, no redraw of the layer
        quietly_set(self.label_lines, data=vectors)
        if len(vectors) and colors != self._label_line_colors:  # a refresh of its own: only when a colour changed
            self.label_lines.edge_color = colors
        self._label_line_colors = colors

    def _sync_measurement_lines(self):
        lines = []
        for m in self.measurements.values():
            if m.available:
                lines += [np.asarray(seg, float) for seg in (m.details or {}).get("lines", [])]
        vectors = as_vectors(lines)
        if self._alive(self.measurement_lines) and np.array_equal(self.measurement_lines.data, vectors):
            return
        if not self._alive(self.measurement_lines):
            if not lines:
                return
            s = self.session
            scale, translate = self._placement
            self.measurement_lines = self.viewer.add_vectors(
                vectors, edge_color=MEASUREMENT_COLOR, edge_width=max(1.0, max(s.image_shape) / 800), length=1.0,
                vector_style="line", name=f"measurement lines ({s.predictor.name})", scale=scale,
                translate=translate, opacity=0.8)
            self._add_below_points(self.measurement_lines)
        else:
            quietly_set(self.measurement_lines, data=vectors)

    def _sync_uncertainty(self):
        s = self.session
        umap = s.uncertainty_map
        if umap is None:
            return
        scale, translate = self._placement
        (sy, sx), (ty, tx) = s.uncertainty_geometry()
        u_scale = (sy * scale[0], sx * scale[1])
        u_translate = (translate[0] + ty * scale[0], translate[1] + tx * scale[1])
        lyr = self.uncertainty
        if not self._alive(lyr):
            self.uncertainty = self.viewer.add_image(
                umap, name=f"uncertainty ({s.predictor.name})", colormap="inferno", blending="additive",
                opacity=0.55, contrast_limits=(0.0, 1.0), scale=u_scale, translate=u_translate,
                visible=self._show_uncertainty, interpolation2d="linear")
            # just over the image, under the outlines and points
            above = self.viewer.layers.index(self.image_layer) + 1 if self._alive(self.image_layer) else 0
            self.viewer.layers.move(self.viewer.layers.index(self.uncertainty), above)
            if self._alive(self.points):
                self.viewer.layers.selection.active = self.points
        else:
            # placement changes only with the image: setting it anyway would recompute the viewer's extent twice
            if not np.allclose(lyr.scale[-2:], u_scale) or not np.allclose(lyr.translate[-2:], u_translate):
                lyr.scale = u_scale
                lyr.translate = u_translate
            quietly_set(lyr, data=umap)

    def _sync_regions(self):
        """Each unpinned point's conformal region as an outline (a Vectors layer, like the outline: updating ~70
        ellipses in a Shapes layer re-triangulates them on the main thread); the suggested next point's in red."""
        t0 = time.perf_counter()
        s = self.session
        geo = s.region_geometry()
        if geo is None:  # the model has no regions: nothing drawn (the panel says so)
            if self._alive(self.regions):
                quietly_set(self.regions, data=np.zeros((0, 2, 2)))
            return
        width = max(1.0, max(s.image_shape) / 1000)
        centres, spread, radius = geo
        doubt = s.in_doubt()
        if not self._all_regions and doubt is not None:  # by default only the points in doubt (issue 34)
            radius = np.where(doubt, radius, np.nan)
        # a region over a quarter of the film says "anywhere around here", not where: not drawn (the check-next list
        # gives its area)
        with np.errstate(invalid="ignore"):
            huge = region_area(spread, radius) > REGION_MAX_FILM_SHARE * float(np.prod(s.image_shape))
        radius = np.where(huge, np.nan, radius)
        segs, colors = region_outlines(centres, spread, radius, highlight=s.suggest_next(), width=width,
                                       bounds=s.image_shape)
        vectors = as_vectors(segs)
        if not self._alive(self.regions):
            if not len(vectors):
                return
            scale, translate = self._placement
            from napari.layers import Vectors

            layer = Vectors(vectors, edge_color=colors, edge_width=width, length=1.0, vector_style="line",
                            name=f"regions ({s.predictor.name})", scale=scale, translate=translate, opacity=1.0,
                            visible=self._show_regions)
            # its thumbnail draws up to 1024 vectors one by one in Python (~250 ms on the 2-core box, at each update):
            # one outline shows what the layer is (set on the layer made here, before the viewer's proxy wraps it)
            layer._max_vectors_thumbnail = REGION_VERTICES
            layer.editable = False
            self.viewer.add_layer(layer)
            self.regions = layer
            self._add_below_points(self.regions)
        elif not np.array_equal(self.regions.data, vectors) or not np.array_equal(colors, self._region_colors):
            quietly_set(self.regions, data=vectors)
            self.regions.editable = False  # (napari makes a layer editable again when its data changes)
            if len(vectors) and not np.array_equal(colors, self._region_colors):
                self.regions.edge_color = colors
            self.region_sync_ms.append((time.perf_counter() - t0) * 1000)
        self._region_colors = colors

    # ------------------------------------------------------------------ visibility and navigation
    def set_uncertainty_visible(self, on: bool) -> None:
        self._show_uncertainty = bool(on)
        if self._alive(self.uncertainty):
            self.uncertainty.visible = self._show_uncertainty

    def set_regions_visible(self, on: bool) -> None:
        self._show_regions = bool(on)
        if self._alive(self.regions):
            self.regions.visible = self._show_regions

    def set_all_regions(self, on: bool) -> None:
        """Draw every unpinned point's region (``on``) or only those of the points in doubt (the default)."""
        self._all_regions = bool(on)
        if self.session.detected:
            self._sync_regions()

    def set_labels_visible(self, on: bool) -> None:
        self._show_labels = bool(on)
        if self._alive(self.labels):
            self.labels.visible = self._show_labels
        if self._alive(self.label_lines):
            self.label_lines.visible = self._show_labels

    def layer_point(self, index: int) -> int:
        """The Points layer row of landmark ``index``."""
        return int(list(self.points.features["index"]).index(int(index)))

    def go_to(self, index: int) -> None:
        """Centre the view on a landmark and select its point."""
        if not self._alive(self.points):
            return
        point = self.layer_point(index)
        world = self.points.data_to_world(self.points.data[point])
        scene = getattr(self.viewer, "scene", None)  # napari ≥ 0.9: viewer.scene.camera (viewer.camera deprecated)
        camera = scene.camera if scene is not None and hasattr(scene, "camera") else self.viewer.camera
        camera.center = tuple(float(v) for v in world)
        self.points.selected_data = {point}
        self.viewer.layers.selection.active = self.points

    def selected_landmarks(self, pinned_only: bool = False) -> list[int]:
        """Landmark indices of the selected points (optionally only the pinned ones)."""
        if not self._alive(self.points):
            return []
        feats = self.points.features
        rows = sorted(self.points.selected_data)
        return [int(feats["index"].iloc[r]) for r in rows
                if not pinned_only or bool(feats["pinned"].iloc[r])]

    # ------------------------------------------------------------------ layers → session
    def _on_points_data(self, event) -> None:
        action = _action(event)
        s = self.session
        lyr = self.points
        if not s.detected or lyr is None:
            return
        if action in ("added", "removed"):
            # one point per landmark: undo the structural edit, say what to do instead
            self._sync_points()
            if action == "added":
                self.notify("warning", "Landmark layers hold exactly one point per landmark: drag a point to correct "
                                       "it (extra points are not kept).")
            else:
                self.notify("warning", "Landmarks cannot be deleted: drag the point where it belongs, or 'Unpin "
                                       "selected' to hand it back to the model.")
            return
        if action != "changed":
            return
        # Which points moved? Compare every point with the session (robust to any edit that reports 'changed':
        # a drag release, a scripted layer.data assignment, a paste).
        index = lyr.features["index"].to_numpy()
        data = np.asarray(lyr.data, float)[:, -2:]
        cur = s.coords
        moved_rows = np.flatnonzero(~np.isclose(data, cur[index], atol=1e-6).all(1))
        if not len(moved_rows):
            return
        moved = {int(index[r]): (float(data[r, 0]), float(data[r, 1])) for r in moved_rows}
        try:
            s.pin(moved)  # one undo step for everything moved in this edit
        except (ValueError, SessionError) as exc:
            self.notify("warning", str(exc))
            self._sync_points()  # put the refused points back where the session has them
            return
        self.on_edit(moved)  # the outline and labels follow with the model's answer

    # ------------------------------------------------------------------ teardown
    def close(self, remove: bool = True) -> None:
        """Stop listening to the session; remove the layers from the viewer (or leave them as plain layers)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._rest.stop()
        self._relabel.stop()
        if self._camera is not None:
            try:
                self._camera.events.zoom.disconnect(self._on_zoom)
            except Exception:  # already disconnected
                pass
        if self.points is not None:
            try:
                self.points.events.data.disconnect(self._on_points_data)
            except Exception:  # already disconnected
                pass
        for attr in ("points", "outline", "measurement_lines", "uncertainty", "labels", "label_lines", "regions"):
            lyr = getattr(self, attr)
            if remove and self._alive(lyr):
                self.viewer.layers.remove(lyr)
            setattr(self, attr, None)
