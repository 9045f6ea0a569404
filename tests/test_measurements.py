"""Clinical measurements: Cobb angles (AASCE method) on constructed spines, cephalometric angles on constructed
points, the generic definition kinds, bad input, SMAPE, and the Cobb method on the AASCE ground truth."""

import math

import numpy as np
import pytest

from napari_interactive_landmarks.measurements import (
    CobbError,
    cobb_angles,
    compute_measurements,
    line_angle,
    smape,
    validate_definitions,
)
from napari_interactive_landmarks.measurements import ceph
from napari_interactive_landmarks.schemas import SchemaError, load_schema

from .conftest import DATASETS


# ------------------------------------------------------------------------------------------------ helpers
def make_spine(tilts_deg, width=40.0, height=24.0, gap=8.0, top=(50.0, 200.0)):
    """(4V, 2) (row, col) corners of rectangular vertebrae tilted by ``tilts_deg`` (counter-clockwise on screen
    positive), stacked along their own down directions so that the centreline follows the tilts."""
    out, centre = [], np.array(top, float)
    prev_down = None
    for t in np.radians(tilts_deg):
        along = np.array([-math.sin(t), math.cos(t)])  # left -> right, (row, col)
        down = np.array([math.cos(t), math.sin(t)])  # top -> bottom
        if prev_down is not None:
            centre = centre + (height + gap) * (prev_down + down) / 2
        prev_down = down
        hw, hh = width / 2 * along, height / 2 * down
        out += [centre - hw - hh, centre + hw - hh, centre - hw + hh, centre + hw + hh]
    return np.array(out)


def ramp(*knots):
    """17 tilts linear between (index, degrees) knots."""
    idx, deg = zip(*knots)
    return np.interp(np.arange(17), idx, deg)


C_TILTS = ramp((0, 9), (3, 15), (13, -20), (16, -11))  # one curve: +15 at T4 to -20 at L2
S_TILTS = ramp((0, 0), (4, -10), (10, 25), (16, -5))  # S: T1..T5 -10, T5..T11 35, T11..L5 30


# -------------------------------------------------------------------------------------------------- Cobb
def test_straight_spine_is_zero():
    r = cobb_angles(make_spine(np.zeros(17)))
    assert r.main_angle == pytest.approx(0, abs=1e-6)
    assert np.allclose(r.angles, 0, atol=1e-6) and np.allclose(r.challenge_angles, 0, atol=1e-6)
    assert not r.s_curve


def test_straight_but_tilted_spine_is_zero():
    r = cobb_angles(make_spine(np.full(17, 12.0)))
    assert np.allclose(r.angles, 0, atol=1e-6) and r.main_angle == pytest.approx(0, abs=1e-6)


def test_c_curve():
    r = cobb_angles(make_spine(C_TILTS))
    assert not r.s_curve
    assert r.main_angle == pytest.approx(35.0, abs=1e-6)  # max tilt difference, T4 vs L2
    assert r.main == "mt" and (r.curves["mt"].upper, r.curves["mt"].lower) == (3, 13)
    assert r.pt == pytest.approx(6.0, abs=1e-6) and (r.curves["pt"].upper, r.curves["pt"].lower) == (0, 3)
    assert r.tl == pytest.approx(9.0, abs=1e-6) and (r.curves["tl"].upper, r.curves["tl"].lower) == (13, 16)
    assert r.challenge_angles == pytest.approx((35.0, 6.0, 9.0), abs=1e-6)
    assert 3 < r.curves["mt"].apex < 13
    # drawing lines: the two end-vertebra lines, left-edge midpoint -> right-edge midpoint
    (a, b), (c, d) = r.curves["mt"].lines
    assert np.allclose(a, r.vertebra_lines[3, 0]) and np.allclose(d, r.vertebra_lines[13, 1])


def test_s_curve_main_in_upper_half():
    r = cobb_angles(make_spine(S_TILTS), image_height=5000)
    assert r.s_curve
    assert r.challenge_angles == pytest.approx((35.0, 10.0, 30.0), abs=1e-6)
    assert (r.pt, r.mt, r.tl) == pytest.approx((10.0, 35.0, 30.0), abs=1e-6)
    assert r.main == "mt"
    assert [(r.curves[k].upper, r.curves[k].lower) for k in ("pt", "mt", "tl")] == [(0, 4), (4, 10), (10, 16)]


def test_s_curve_main_in_lower_half():
    r = cobb_angles(make_spine(S_TILTS), image_height=300)  # the main curve sits below the image's middle
    assert r.s_curve and r.main == "tl"
    assert r.challenge_angles == pytest.approx((35.0, 10.0, 0.0), abs=1e-6)
    assert (r.pt, r.mt, r.tl) == pytest.approx((0.0, 10.0, 35.0), abs=1e-6)


def test_cobb_without_image_height_uses_spine_extent():
    r = cobb_angles(make_spine(S_TILTS))
    assert r.s_curve and r.notes  # says the spine's own extent was used
    assert r.main_angle == pytest.approx(35.0)


def test_cobb_is_invariant_to_rotation_and_mirror():
    c = make_spine(S_TILTS)
    ref = cobb_angles(c, image_height=5000).challenge_angles
    th = math.radians(7)
    rot = (c - c.mean(0)) @ np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]) + c.mean(0)
    assert cobb_angles(rot, image_height=5000).challenge_angles == pytest.approx(ref, abs=1e-6)
    mirrored = c.copy()
    mirrored[:, 1] = 1000 - mirrored[:, 1]
    mirrored = mirrored.reshape(17, 4, 2)[:, [1, 0, 3, 2]].reshape(68, 2)  # left/right as seen in the image
    assert cobb_angles(mirrored, image_height=5000).challenge_angles == pytest.approx(ref, abs=1e-6)


def test_cobb_bad_input_raises_cobb_error_with_reason():
    c = make_spine(C_TILTS)
    bad = c.copy()
    bad[5] = np.nan
    with pytest.raises(CobbError, match="missing on vertebra 2"):
        cobb_angles(bad)
    swapped = c.reshape(17, 4, 2).copy()
    swapped[[5, 6]] = swapped[[6, 5]]
    with pytest.raises(CobbError, match="out of order: vertebra 7 is not below vertebra 6"):
        cobb_angles(swapped.reshape(68, 2))
    upside = c.reshape(17, 4, 2)[:, [2, 3, 0, 1]].reshape(68, 2)
    with pytest.raises(CobbError, match="top edge is not above the bottom edge"):
        cobb_angles(upside)
    flat = c.copy()
    flat[[1, 3]] = flat[[0, 2]]
    with pytest.raises(CobbError, match="zero width"):
        cobb_angles(flat)
    # the reference code does not check the order; check_order=False does the same
    assert cobb_angles(swapped.reshape(68, 2), check_order=False).main_angle > 0


# ------------------------------------------------------------------------------- generic / schema-driven
def test_builtin_schemas_have_valid_definitions():
    spine = validate_definitions("aasce-spine68")
    assert [d.name for d in spine] == ["cobb_main", "cobb_pt", "cobb_mt", "cobb_tl"]
    names = [d.name for d in validate_definitions("isbi-ceph19")]
    assert {"SNA", "SNB", "ANB", "FMA", "facial_angle"} <= set(names)


def test_spine_measurements_and_missing_vertebra():
    c = make_spine(C_TILTS)
    m = compute_measurements("aasce-spine68", c)
    assert m["cobb_main"].available and m["cobb_main"].value == pytest.approx(35.0)
    assert m["cobb_mt"].details["upper_end"] == "T4" and m["cobb_mt"].details["lower_end"] == "L2"
    assert len(m["cobb_main"].details["lines"]) == 2 and m["cobb_main"].unit == "deg"
    s = compute_measurements("aasce-spine68", make_spine(S_TILTS), image_shape=(300, 1000))
    assert s["cobb_main"].details["s_curve"] and s["cobb_main"].details["curve"] == "tl"  # image height used
    assert s["cobb_tl"].value == pytest.approx(35.0) and s["cobb_pt"].value == pytest.approx(0.0, abs=1e-9)
    c[9] = np.nan  # T3 top-right
    m = compute_measurements("aasce-spine68", c)
    assert not m["cobb_main"].available and m["cobb_main"].value is None
    assert "T3" in m["cobb_main"].reason and "missing" in m["cobb_main"].reason


def test_spine_out_of_order_is_unavailable_not_raised():
    c = make_spine(C_TILTS).reshape(17, 4, 2)
    c[[10, 11]] = c[[11, 10]]
    m = compute_measurements("aasce-spine68", c.reshape(68, 2))
    assert all(not v.available for v in m.values())
    assert "T12 is not below T11" in m["cobb_tl"].reason


def cephalo(sna_deg=82.0, snb_deg=80.0, fma_deg=25.0, facial_deg=87.0):
    """19 ISBI landmarks (row, col), face to the right, with the given SNA, SNB, FMA and facial angle."""
    p = np.zeros((19, 2))
    rng = np.random.default_rng(0)
    p[:] = rng.uniform(200, 1500, size=(19, 2))  # landmarks not used by the angles below
    p[ceph.SELLA], p[ceph.NASION] = (700, 500), (650, 1200)
    sn = p[ceph.SELLA] - p[ceph.NASION]
    base = math.atan2(-sn[0], sn[1])  # screen angle of N->S (x = col, y = -row)

    def from_nasion(deg, length):  # rotate N->S counter-clockwise on screen by `deg` (downwards)
        a = base + math.radians(deg)
        return p[ceph.NASION] + length * np.array([-math.sin(a), math.cos(a)])

    p[ceph.A_POINT], p[ceph.B_POINT] = from_nasion(sna_deg, 400), from_nasion(snb_deg, 750)
    p[ceph.PORION], p[ceph.ORBITALE] = (900, 350), (900, 1050)  # Frankfort horizontal, pointing right
    p[ceph.GONION] = (1500, 450)
    t = math.radians(fma_deg)
    p[ceph.MENTON] = p[ceph.GONION] + 700 * np.array([math.sin(t), math.cos(t)])
    f = math.radians(facial_deg)  # N - Pog at `facial_deg` counter-clockwise from +col on screen
    p[ceph.POGONION] = p[ceph.NASION] - 1100 * np.array([-math.sin(f), math.cos(f)])
    return p


def test_ceph_angles_on_constructed_points():
    p = cephalo()
    assert ceph.faces_right(p)
    m = compute_measurements("isbi-ceph19", p)
    assert m["SNA"].value == pytest.approx(82.0, abs=1e-9)
    assert m["SNB"].value == pytest.approx(80.0, abs=1e-9)
    assert m["ANB"].value == pytest.approx(2.0, abs=1e-9)
    assert m["FMA"].value == pytest.approx(25.0, abs=1e-9)
    assert m["facial_angle"].value == pytest.approx(87.0, abs=1e-9)
    # a prognathic chin opens the facial angle beyond 90 (directed angle, not the acute one)
    assert compute_measurements("isbi-ceph19", cephalo(facial_deg=93))["facial_angle"].value == pytest.approx(93.0)
    # class III: ANB negative
    assert compute_measurements("isbi-ceph19", cephalo(snb_deg=85))["ANB"].value == pytest.approx(-3.0)
    # the YAML definitions and the direct functions agree on every shared measurement
    for name, fn in [("SNA", ceph.sna), ("SNB", ceph.snb), ("ANB", ceph.anb), ("FMA", ceph.fma),
                     ("facial_angle", ceph.facial_angle), ("SN_MP", ceph.sn_mp), ("gonial_angle", ceph.gonial_angle),
                     ("y_axis", ceph.y_axis), ("FHI", ceph.facial_height_index)]:
        assert m[name].value == pytest.approx(fn(p), abs=1e-9), name
    # mirrored image (face to the left): unsigned angles do not change
    q = p.copy()
    q[:, 1] = 3000 - q[:, 1]
    assert not ceph.faces_right(q)
    mq = compute_measurements("isbi-ceph19", q)
    assert all(mq[k].value == pytest.approx(m[k].value) for k in m)


def test_ceph_missing_and_coincident_landmarks():
    p = cephalo()
    p[ceph.POGONION] = np.nan
    m = compute_measurements("isbi-ceph19", p)
    assert not m["facial_angle"].available and "pogonion" in m["facial_angle"].reason
    assert m["SNA"].available and m["FMA"].available and m["ANB"].available
    p = cephalo()
    p[ceph.A_POINT] = np.nan
    m = compute_measurements("isbi-ceph19", p)
    assert not m["SNA"].available and not m["ANB"].available and "SNA is unavailable" in m["ANB"].reason
    assert m["SNB"].available
    p = cephalo()
    p[ceph.MENTON] = p[ceph.GONION]
    m = compute_measurements("isbi-ceph19", p)
    assert not m["FMA"].available and "coincide" in m["FMA"].reason
    assert m["anterior_face_height"].available  # N-Me is still a length
    assert m["SNA"].available and m["facial_angle"].available


def test_distance_units_and_spacing():
    p = cephalo()
    m_px = compute_measurements("isbi-ceph19", p)
    m_mm = compute_measurements("isbi-ceph19", p, spacing=0.1)
    d = float(np.hypot(*(p[ceph.MENTON] - p[ceph.NASION])))
    assert m_px["anterior_face_height"].unit == "px" and m_px["anterior_face_height"].value == pytest.approx(d)
    assert m_mm["anterior_face_height"].unit == "mm" and m_mm["anterior_face_height"].value == pytest.approx(d / 10)
    assert m_mm["FHI"].value == pytest.approx(m_px["FHI"].value) and m_mm["FHI"].unit == "ratio"
    assert m_mm["SNA"].value == pytest.approx(m_px["SNA"].value)  # isotropic spacing keeps angles
    m_aniso = compute_measurements("isbi-ceph19", p, spacing=(0.1, 0.2))
    assert m_aniso["SNA"].value != pytest.approx(m_px["SNA"].value)  # angles in physical space
    # drawing lines stay in image pixels whatever the spacing
    assert m_aniso["FMA"].details["lines"][0] == [list(p[ceph.PORION]), list(p[ceph.ORBITALE])]
    d = m_mm["FMA"].to_dict()
    assert d["available"] and d["unit"] == "deg" and isinstance(d["details"]["lines"], list)


def test_line_angle_conventions():
    o, right, up, upleft = (0, 0), (0, 1), (-1, 0), (-1, -1)
    assert line_angle(o, right, o, up) == pytest.approx(90)
    assert line_angle(o, right, o, up, signed=True) == pytest.approx(90)  # counter-clockwise on screen: +
    assert line_angle(o, up, o, right, directed=True, signed=True) == pytest.approx(-90)
    assert line_angle(o, up, o, right, signed=True) == pytest.approx(90)  # undirected lines: (-90, 90]
    assert line_angle(o, right, o, upleft, directed=True) == pytest.approx(135)
    assert line_angle(o, right, o, upleft) == pytest.approx(45)
    assert line_angle(o, right, o, upleft, signed=True) == pytest.approx(-45)
    assert line_angle(o, right, o, upleft, directed=True, signed=True) == pytest.approx(135)


def _schema_with(*measurements):
    return load_schema({"name": "t", "landmarks": ["a", "b", "c", "d"], "measurements": list(measurements)})


def test_generic_kinds_and_bad_definitions():
    s = _schema_with(
        {"name": "ab", "kind": "distance", "landmarks": ["a", "b"], "unit": "mm", "definition": "a to b"},
        {"name": "abc", "kind": "angle", "landmarks": ["a", "b", "c"], "definition": "at b"},
        {"name": "tilt", "kind": "line_angle", "landmarks": ["a", "b", "c", "d"], "signed": True, "definition": "x"},
        {"name": "diff", "kind": "difference", "of": ["abc", "tilt"], "definition": "abc - tilt"},
    )
    pts = np.array([[0, 0], [0, 10], [10, 10], [20, 20.0]])
    m = compute_measurements(s, pts)
    assert m["ab"].value == pytest.approx(10) and m["ab"].unit == "px"
    assert m["abc"].value == pytest.approx(90)
    assert m["tilt"].value == pytest.approx(-45)  # a->b points right, c->d down-right: clockwise on screen
    assert m["diff"].value == pytest.approx(135) and m["diff"].unit == "deg"
    collinear = compute_measurements(s, np.array([[0, 0], [0, 10], [0, 20], [5, 5.0]]))
    assert collinear["abc"].value == pytest.approx(180) and "collinear" in collinear["abc"].details["note"]
    bad = [
        ({"name": "x", "kind": "angle", "landmarks": ["a", "b"], "definition": "y"}, "exactly 3"),
        ({"name": "x", "kind": "distance", "landmarks": ["a", "zz"], "definition": "y"}, "'zz' is not a landmark"),
        ({"name": "x", "kind": "spline", "definition": "y"}, "unknown kind"),
        ({"name": "x", "kind": "angle", "landmarks": ["a", "b", "c"]}, "definition"),
        ({"name": "x", "kind": "angle", "landmarks": ["a", "b", "c"], "unit": "mm", "definition": "y"}, "deg"),
        ({"name": "x", "kind": "line_angle", "landmarks": ["a", "b", "c", "d"], "signd": True, "definition": "y"},
         "unknown field"),
        ({"name": "x", "kind": "difference", "of": ["x", "x"], "definition": "y"}, "cycle"),
        ({"name": "x", "kind": "ratio", "of": ["x", "nope"], "definition": "y"}, "unknown measurement 'nope'"),
        ({"name": "x", "kind": "cobb", "curve": "main", "definition": "y"}, "at least 3 vertebra groups"),
    ]
    for entry, msg in bad:
        with pytest.raises(SchemaError, match=msg):
            validate_definitions(_schema_with(entry))


# ------------------------------------------------------------------------------------------------- SMAPE
def test_smape_hand_computed():
    pred = [[10, 20, 30], [0, 0, 0]]
    gt = [[12, 18, 30], [0, 0, 0]]
    # image 1: (2 + 2 + 0) / (22 + 38 + 60) = 1/30; image 2: all zero -> 0 by definition
    assert smape(pred, gt) == pytest.approx(100 / 60)
    assert smape([5, 0, 0], [0, 0, 0]) == pytest.approx(100.0)
    assert smape([[1, 2, 3]], [[1, 2, 3]]) == 0.0
    assert math.isnan(smape([[np.nan, 1, 1]], [[1, 1, 1]]))
    with pytest.raises(ValueError):
        smape([[1, 2, 3]], [[1, 2]])


# ------------------------------------------------------------------------------------- AASCE ground truth
AASCE = DATASETS / "aasce"


@pytest.mark.skipif(not AASCE.is_dir(), reason="AASCE dataset not available")
def test_cobb_reproduces_aasce_angles_on_ground_truth():
    from napari_interactive_landmarks.data.datasets import load_aasce

    samples = load_aasce(AASCE, "training")
    gt = np.array([s.extra["cobb_angles"] for s in samples])
    # as the reference code: the image height for the S rule, no order check (some published annotations
    # have vertebrae out of order, and angles.csv was computed from them anyway)
    pred = np.array([cobb_angles(s.coords, s.image_shape[0], check_order=False).challenge_angles for s in samples])
    assert smape(pred, gt) < 0.01  # measured 0.0005 % (angles.csv is rounded to 5 significant digits)
    assert np.abs(pred[:, 0] - gt[:, 0]).max() < 0.01
    no_height = np.array([cobb_angles(s.coords, check_order=False).challenge_angles for s in samples])
    assert smape(no_height, gt) < 1.5  # measured 0.76 %: the S rule then uses the spine's extent
