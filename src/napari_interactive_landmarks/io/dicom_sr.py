"""The landmarks of a DICOM film as a DICOM Comprehensive SR (TID 1500 measurement report), and back (issue 37
item 1). Written with highdicom; read with highdicom (or any SR reader: the content tree is standard).

What the report holds, for the film it references by its SOP Instance UID:

- each landmark as a *planar ROI measurement group* (TID 1411): its tracking identifier is the landmark's name (and
  a UID), its region an image region of graphic type POINT on the source image, its finding "Anatomical landmark"
  (a code of the project's private scheme ``99NAPLM``, declared in the report's Coding Scheme Identification
  Sequence: no standard code names a landmark as such), a qualitative evaluation *placed by a person* (yes/no: the pinned flag), and, for a point the model
  placed, its expected radial error (mm where the pixel spacing is known, else px — UCUM ``{px}``) and the 95 %
  region's semi-axes and orientation;
- each available measurement (Cobb angles, cephalometric angles and distances) in one *measurements group*
  (TID 1501), with its unit (deg, mm, px) and its expected error as a derived measurement;
- the pixel spacing used and where it came from (PixelSpacing or ImagerPixelSpacing, or none), as text.

Coordinates: the project's (row, col) have pixel centres at integers; DICOM's SCOORD has the top-left corner of
the top-left pixel at (0, 0) and gives (column, row): ``(col + 0.5, row + 0.5)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["SRError", "write_landmarks_sr", "read_landmarks_sr"]

SCHEME = "99NAPLM"  # the project's private coding scheme (DICOM PS3.16 8.2: "99" + an organisation's letters)


class SRError(ValueError):
    """A structured report cannot be written or read; the message says why."""


def _code(value: str, meaning: str, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _codes():
    return {
        "landmark": _code("LANDMARK", "Anatomical landmark"),
        "pinned": _code("PINNED", "Placed by a person"),
        "ere": _code("ERE", "Expected radial error"),
        "region_major": _code("REGMAJ", "Confidence region semi-major axis"),
        "region_minor": _code("REGMIN", "Confidence region semi-minor axis"),
        "region_angle": _code("REGANG", "Confidence region orientation"),
        "region_level": _code("REGLVL", "Confidence region level"),
        "expected_error": _code("MEASERR", "Expected error of the measurement"),
        "spacing": _code("SPACING", "Pixel spacing used"),
        "model": _code("MODEL", "Landmark model"),
        "landmark_set": _code("LMSET", "Landmark set"),
    }


def _unit(unit: str):
    from pydicom.sr.codedict import codes

    from highdicom.sr import CodedConcept

    return {"mm": codes.UCUM.Millimeter, "deg": CodedConcept("deg", "UCUM", "degree"),
            "px": CodedConcept("{px}", "UCUM", "pixel"), "%": CodedConcept("%", "UCUM", "percent"),
            "1": CodedConcept("1", "UCUM", "no units")}[unit]


def write_landmarks_sr(path, source, *, labels: Sequence[str], coords, pinned, ere=None, regions=None,
                       measurements: dict | None = None, spacing=None, spacing_source: str | None = None,
                       model: str = "", landmark_set: str = "", overwrite: bool = False) -> Path:
    """Write the landmarks of the DICOM film ``source`` (a pydicom Dataset or a path to it) as a Comprehensive SR
    at ``path`` (module doc). ``ere`` in original pixels (converted to mm with ``spacing``); ``regions``: the
    session's region arrays (``semi_axes`` (K, 2) px, ``angle_deg`` (K,), ``level``); ``measurements``: name →
    ``Measurement`` or its dict."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from .files import SaveExistsError, replaced_atomically

    path = Path(path)
    if path.exists() and not overwrite:
        raise SaveExistsError(f"{path}: file already exists; not overwriting it", path)
    src = pydicom.dcmread(str(source), stop_before_pixels=True) if not isinstance(source, pydicom.Dataset) else source
    for attr in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not getattr(src, attr, None):
            raise SRError(f"the source film has no {attr}: a structured report must reference a DICOM image")
    src = _with_type2(src)
    c = _codes()
    coords = np.asarray(coords, float)
    pinned = np.asarray(pinned, bool)
    mm = None if spacing is None else float(np.mean(np.broadcast_to(np.asarray(spacing, float), 2)))
    length_unit = _unit("mm") if mm else _unit("px")
    scale = mm or 1.0
    source_image = hd.sr.SourceImageForRegion.from_source_image(src)
    groups = []
    for i, label in enumerate(labels):
        if not np.isfinite(coords[i]).all():
            continue  # a missing landmark: not reported
        row, col = coords[i]
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT,
                                   graphic_data=np.array([[col + 0.5, row + 0.5]]), source_image=source_image)
        found = []
        if ere is not None and not pinned[i] and np.isfinite(ere[i]):
            found.append(hd.sr.Measurement(name=c["ere"], value=float(ere[i]) * scale, unit=length_unit))
        if regions is not None and not pinned[i] and regions.get("semi_axes_px") is not None:
            axes = np.asarray(regions["semi_axes_px"], float)[i]
            angle = float(np.asarray(regions["angle_deg"], float)[i])
            if np.isfinite(axes).all() and np.isfinite(angle):
                found += [hd.sr.Measurement(name=c["region_major"], value=float(axes[0]) * scale, unit=length_unit),
                          hd.sr.Measurement(name=c["region_minor"], value=float(axes[1]) * scale, unit=length_unit),
                          hd.sr.Measurement(name=c["region_angle"], value=angle, unit=_unit("deg"))]
                if regions.get("level"):
                    found.append(hd.sr.Measurement(name=c["region_level"], value=100.0 * float(regions["level"]),
                                                   unit=_unit("%")))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=str(label)),
            referenced_region=region, finding_type=c["landmark"],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=c["pinned"], value=codes.SCT.Yes if pinned[i] else codes.SCT.No)],
            measurements=found or None))
    for name, m in (measurements or {}).items():  # each measurement its own group: the value and its expected error
        d = m if isinstance(m, dict) else m.to_dict()
        if not d.get("available") or d.get("value") is None or not np.isfinite(d["value"]):
            continue
        unit = _unit({"deg": "deg", "mm": "mm", "px": "px"}.get(str(d.get("unit")), "1"))
        items = [hd.sr.Measurement(name=_code(_safe_value(name), str(name)), value=float(d["value"]), unit=unit)]
        if d.get("expected_error") is not None and np.isfinite(d["expected_error"]):
            items.append(hd.sr.Measurement(name=c["expected_error"], value=float(d["expected_error"]), unit=unit))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=str(name)), measurements=items))
    if mm:  # the film's pixel spacing that the lengths above rest on
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"pixel spacing ({spacing_source or 'given'})"),
            measurements=[hd.sr.Measurement(name=c["spacing"], value=mm, unit=_unit("mm"))]))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="napari-interactive-landmarks", model_name=model or None))
    context = hd.sr.ObservationContext(observer_person_context=None, observer_device_context=observer)
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=hd.sr.CodedConcept("363680008", "SCT", "Radiographic imaging procedure"),
        imaging_measurements=groups, title=codes.DCM.ImagingMeasurementReport)
    sr = hd.sr.ComprehensiveSR(
        evidence=[src], content=report[0], series_number=9901, series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="napari-interactive-landmarks", is_complete=True, is_final=False,
        series_description=("Landmarks; " + (f"{mm:g} mm/px from {spacing_source or 'the user'}" if mm
                                              else "no pixel spacing: lengths in px"))[:64])
    from pydicom.dataset import Dataset

    scheme = Dataset()  # the private coding scheme, declared (PS3.3 C.12.1.1.2.1)
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "napari-interactive-landmarks"
    scheme.CodingSchemeResponsibleOrganization = "napari-interactive-landmarks"
    sr.CodingSchemeIdentificationSequence = [scheme]
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return path


def _with_type2(src):
    """A copy of the film's header with the patient and study attributes the SR copies (type 2: present, possibly
    empty) present — a film exported without them still gets a valid report."""
    import copy

    out = copy.deepcopy(src)
    for attr in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "AccessionNumber", "StudyID"):
        if attr not in out:
            setattr(out, attr, "")
    return out


def _safe_value(name: str) -> str:
    v = "".join(ch if ch.isalnum() else "_" for ch in str(name)).upper()
    return v[:16] or "MEASUREMENT"


def read_landmarks_sr(path, labels: Sequence[str]) -> dict:
    """(coords (K, 2) with NaN rows for landmarks the report lacks, pinned (K,), the referenced SOP Instance UID)
    from a report written by :func:`write_landmarks_sr` (any TID 1500 report whose point ROIs are named by the
    landmarks' names)."""
    import highdicom as hd
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        sr = hd.sr.ComprehensiveSR.from_dataset(ds)
    except Exception as exc:
        raise SRError(f"{path}: not a readable DICOM structured report ({exc})") from None
    content = sr.content
    slot = {str(n): i for i, n in enumerate(labels)}
    coords = np.full((len(labels), 2), np.nan)
    pinned = np.zeros(len(labels), bool)
    ref = None
    for group in content.get_planar_roi_measurement_groups():
        name = group.tracking_identifier
        if name not in slot:
            continue
        roi = group.roi
        if roi is None:
            continue
        col, row = np.asarray(roi.value, float).reshape(-1, 2)[0]
        coords[slot[name]] = (row - 0.5, col - 0.5)
        for item in getattr(roi, "ContentSequence", []):  # the SELECTED FROM image
            for r in getattr(item, "ReferencedSOPSequence", []):
                ref = str(r.ReferencedSOPInstanceUID)
        for qe in group.get_qualitative_evaluations():
            if qe.name.value == "PINNED":
                pinned[slot[name]] = qe.value.value == "373066001"  # SCT Yes
    return {"coords": coords, "pinned": pinned, "referenced_sop_instance_uid": ref}
