"""Landmark labels that overlap nothing (issue 20, item 6): the placement (pure) and the labels the viewer draws."""

import itertools

import numpy as np
import pytest

FONT_PX = 10  # the labels' font size in napari (screen pixels)


def _overlap(a, b):
    return min(a[2], b[2]) - max(a[0], b[0]) > 1e-9 and min(a[3], b[3]) - max(a[1], b[1]) > 1e-9


def _box_point_distance(box, p):
    dr = max(box[0] - p[0], p[0] - box[2], 0.0)
    dc = max(box[1] - p[1], p[1] - box[3], 0.0)
    return float(np.hypot(dr, dc))


def _assert_clear(boxes, points, radius, texts):
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not _overlap(a, b), f"label {texts[i]!r} overlaps label {texts[j]!r}"
    for i, box in enumerate(boxes):
        for p in points:
            assert _box_point_distance(box, p) >= radius, f"label {texts[i]!r} covers the point at {p}"


# ------------------------------------------------------------------ the placement (no napari)

def test_a_crowded_chin_gets_labels_that_overlap_nothing_with_leader_lines():
    from napari_interactive_landmarks.label_placement import place_labels

    # Pog, Gn and Me within a few pixels (as on a real cephalogram at the chin), B above, Pog' in front
    pts = np.array([[2014.0, 1275.0], [2018.0, 1271.0], [2021.0, 1277.0], [1895.0, 1296.0], [2066.0, 1368.0]])
    texts = ["Pog", "Gn", "Me", "B", "Pog'"]
    radius = 10.0
    p = place_labels(pts, texts, pts, text_size=(50.0, 25.0), point_radius=radius,
                     preferred=pts - pts.mean(0))
    assert np.isfinite(p.boxes).all() and (p.overlaps == 0).all()
    _assert_clear(p.boxes, pts, radius, texts)
    # the three chin labels cannot all sit beside their point unambiguously: each is set off with a leader line,
    # which starts at its own point and ends on its own box
    assert p.leader[:3].all()
    assert len(p.leaders) == p.leader.sum()
    for seg, i in zip(p.leaders, np.flatnonzero(p.leader)):
        assert np.hypot(*(seg[0] - pts[i])) <= radius + 1e-6
        assert _box_point_distance(p.boxes[i], seg[1]) < 1e-6
    # a label beside its point, nearer to it than to any other point, needs no leader
    assert not p.leader[3]


def test_vertebra_labels_squeezed_closer_than_a_line_height_do_not_overlap():
    from napari_interactive_landmarks.label_placement import place_labels

    names = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    rows = 100.0 + 30.0 * np.arange(17)  # vertebrae 30 px apart, labels 40 px high
    cols = 500.0 + 40.0 * np.sin(np.arange(17) / 3.0)  # a scoliotic curve
    corners = np.concatenate([np.stack([rows - 10, cols], 1), np.stack([rows + 10, cols], 1),
                              np.stack([rows - 10, cols + 60], 1), np.stack([rows + 10, cols + 60], 1)])
    anchors = np.stack([rows, cols], 1)
    p = place_labels(anchors, names, corners, text_size=(40.0, 20.0), point_radius=4.0, preferred=(0.0, -1.0),
                     bounds=(0.0, 0.0, 1000.0, 1000.0))
    _assert_clear(p.boxes, corners, 4.0, names)
    assert (p.boxes[:, 0] >= 0).all() and (p.boxes[:, 3] <= 1000).all()
    assert p.leader.any() and len(p.leaders) == p.leader.sum()
    # the default side is kept where there is room: most labels are left of their vertebra
    assert (p.centers[:, 1] < anchors[:, 1]).mean() > 0.7


def test_an_isolated_label_sits_beside_its_point_on_the_preferred_side():
    from napari_interactive_landmarks.label_placement import place_labels

    p = place_labels([[500.0, 500.0]], ["S"], text_size=(20.0, 10.0), point_radius=5.0, preferred=(0.0, 1.0))
    assert not p.leader[0] and len(p.leaders) == 0
    box = p.boxes[0]
    assert box[1] > 500 and box[0] < 500 < box[2]  # to the right, level with the point
    assert _box_point_distance(box, (500.0, 500.0)) < 20.0


def test_vertebra_labels_keep_their_order_and_labels_avoid_bright_bone():
    from napari_interactive_landmarks.label_placement import BrightBackground, place_labels

    rows = 100.0 + 25.0 * np.arange(8)
    anchors = np.stack([rows, np.full(8, 300.0)], 1)
    names = [f"T{i}" for i in range(1, 9)]
    p = place_labels(anchors, names, anchors, text_size=(40.0, 20.0), point_radius=4.0, preferred=(0.0, -1.0),
                     keep_order=True)
    assert (np.diff(p.centers[:, 0]) > 0).all()  # T1 above T2 above … T8, however they were pushed aside
    # a film bright on the left of the points: a white label goes to the dark right instead of its usual left
    film = np.zeros((400, 600))
    film[:, :300] = 255
    bg = BrightBackground(film, (0, 255))
    assert bg([[0, 0, 10, 10], [0, 400, 10, 410]]).tolist() == [1.0, 0.0]
    q = place_labels([[200.0, 300.0]], ["Po"], text_size=(20.0, 10.0), point_radius=4.0, preferred=(0.0, -1.0),
                     background=bg)
    assert q.boxes[0, 1] >= 300


# ------------------------------------------------------------------ the labels in the viewer


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 (viewer.camera is deprecated there)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _label_boxes(widget):
    """The labels as napari draws them: centred on the labels layer's points, 18 screen px high (napari's text at
    size 10 with a descender) and 0.8 font sizes per character wide, converted to data units with the zoom."""
    lyr = widget.labels_layer
    zoom = _camera(widget.viewer).zoom
    scale = np.asarray(lyr.scale[-2:], float)
    h = 18.0 / (zoom * scale[0])
    em = FONT_PX / (zoom * scale[1])
    boxes = []
    for (r, c), t in zip(np.asarray(lyr.data, float), lyr.features["text"]):
        w = 0.8 * len(str(t)) * em
        boxes.append((r - h / 2, c - w / 2, r + h / 2, c + w / 2))
    return boxes, list(lyr.features["text"])


def _settle(qtbot, widget):
    from napari_interactive_landmarks.napari._demo import wait_until_idle

    wait_until_idle(widget, 120)
    qtbot.wait(400)  # a zoom's re-placement runs once the zoom has settled
    widget.layers.flush()


def test_vertebra_labels_in_the_viewer_do_not_overlap_when_zoomed_out(make_napari_viewer_proxy, qtbot):
    pytest.importorskip("napari")
    from napari_interactive_landmarks.napari._demo import wait_until_idle
    from napari_interactive_landmarks.napari._sample_data import phantom_spine
    from napari_interactive_landmarks.napari._widget import LandmarkWidget

    viewer = make_napari_viewer_proxy()
    data, kwargs, _ = phantom_spine()[0]
    viewer.add_image(data, **kwargs)
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText("phantom-spine")
    w.detect()
    wait_until_idle(w, 120)
    # zoom out until a label is taller than the distance between two vertebrae: a crowded spine
    rows = np.sort([r for _g, (r, _c), _m in w.session.schema.group_labels(w.session.coords)])
    spacing = float(np.diff(rows).min())
    _camera(viewer).zoom = 18.0 / (1.6 * spacing)
    _settle(qtbot, w)
    boxes, texts = _label_boxes(w)
    assert len(boxes) == len(rows)
    coords = w.session.coords
    radius = float(np.max(w.points_layer.size)) / 2
    _assert_clear(boxes, coords[np.isfinite(coords).all(1)], radius, texts)
    # labels set off from their vertebra are tied to it by a leader line; "Show labels" hides both
    lines = w.layers.label_lines
    assert lines is not None and len(lines.data) == int(w.layers.label_placement.leader.sum()) > 0
    w.show_labels.setChecked(False)
    assert not w.labels_layer.visible and not lines.visible
    w.show_labels.setChecked(True)
    assert lines.visible
    # deleting the landmark layer takes the leader lines with the labels (hidden now, removed on the next draw)
    viewer.layers.remove(w.points_layer)
    assert lines in viewer.layers and not lines.visible
    w.session._dirty = False


def test_crowded_cephalometric_labels_in_the_viewer_do_not_overlap(make_napari_viewer_proxy, qtbot):
    pytest.importorskip("napari")
    from napari_interactive_landmarks.napari._demo import wait_until_idle
    from napari_interactive_landmarks.napari._widget import LandmarkWidget, simulate_drag

    viewer = make_napari_viewer_proxy()
    yy, xx = np.mgrid[0:2400:4, 0:1935:4]
    film = np.repeat(np.repeat(((np.sin(yy / 90.0) + np.cos(xx / 70.0)) * 40 + 100).astype(np.uint8), 4, 0), 4, 1)
    viewer.add_image(film[:2400, :1935], name="ceph")
    w = LandmarkWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_combo.setCurrentText("isbi-ceph")
    w.detect()
    wait_until_idle(w, 300)
    schema = w.session.schema
    # Pog, Gn and Me dragged within a few pixels of each other, L1 tip onto U1 tip: the crowding of real films
    chin = np.array([1900.0, 1200.0])
    targets = {schema.index("pogonion"): chin, schema.index("gnathion"): chin + (4.0, -3.0),
               schema.index("menton"): chin + (7.0, 3.0)}
    upper = w.session.coords[schema.index("upper_incisal_incision")]
    targets[schema.index("lower_incisal_incision")] = upper + (5.0, -4.0)
    lyr = w.points_layer
    for k, pos in targets.items():
        simulate_drag(lyr, w.layers.layer_point(k), pos)
        wait_until_idle(w, 300)
    viewer.reset_view()
    _settle(qtbot, w)
    boxes, texts = _label_boxes(w)
    assert len(boxes) == 19
    coords = w.session.coords
    radius = float(np.max(w.points_layer.size)) / 2
    _assert_clear(boxes, coords[np.isfinite(coords).all(1)], radius, texts)
    p = w.layers.label_placement
    crowded = [texts.index(schema.short_label(k)) for k in targets]
    assert p.leader[crowded].sum() >= 3  # the crowded labels are tied to their points by leader lines
    w.session._dirty = False


# ------------------------------------------------------------------ vertebra labels on real spine films (issue 34)
def _aasce_films(n):
    from napari_interactive_landmarks.data.datasets import load_aasce

    from .conftest import DATASETS

    root = DATASETS / "aasce"
    if not root.exists():
        pytest.skip(f"the AASCE films are not at {root} (../shared/datasets/aasce)")
    return load_aasce(root, "training")[:n]


def test_vertebra_labels_read_in_order_beside_their_own_vertebra_with_short_uncrossed_leaders():
    """On 40 real spine films (their annotated corners, as a good prediction puts them): T1 … L5 from top to bottom,
    no label over another or over a corner, each within a few lines of its vertebra, no two leaders crossing."""
    from napari_interactive_landmarks.label_placement import _segments_cross, place_chain_labels
    from napari_interactive_landmarks.schemas import load_schema

    schema = load_schema("aasce-spine68")
    worst_leader = 0.0
    for film in _aasce_films(40):
        coords = film.coords
        h, w = film.image_shape
        lh = h / 45  # font 10 px, 20 px a line, on a film fitted to a 900 px high canvas
        groups = schema.group_labels(coords)
        anchors = np.array([(r, coords[list(m), 1].min()) for _, (r, _), m in groups])
        if (np.diff(anchors[:, 0]) < 0).any():  # a film whose annotation has a vertebra out of order (a label
            continue  # defect of the dataset: 26 of its 481 films) tests nothing here
        texts = [g for g, _, _ in groups]
        radius = lh / 4
        p = place_chain_labels(anchors, texts, coords, text_size=(lh, lh / 2), point_radius=radius,
                               bounds=(0, 0, h, w))
        assert (np.diff(p.centers[:, 0]) > 0).all(), f"{film.name}: labels out of order"
        _assert_clear(p.boxes, coords, radius, texts)
        assert (p.boxes[:, 1] >= 0).all() and (p.boxes[:, 0] >= 0).all() and (p.boxes[:, 2] <= h).all()
        if len(p.leaders) > 1:
            crossing = _segments_cross(p.leaders[:, 0], p.leaders[:, 1], p.leaders)
            assert not crossing.any(), f"{film.name}: two leader lines cross"
        # beside its own vertebra: the label's row within a few lines of the vertebra's, its box near the left edge
        shift = np.abs(p.centers[:, 0] - anchors[:, 0])
        reach = anchors[:, 1] - p.boxes[:, 3]
        worst_leader = max(worst_leader, float(np.max(np.hypot(shift, reach)) / lh))
        assert shift.max() <= 3 * lh, f"{film.name}: a label {shift.max() / lh:.1f} lines from its vertebra"
    assert worst_leader <= 12, worst_leader
