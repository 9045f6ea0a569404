"""Films from a PACS and reports back, over DICOMweb (issue 37 item 2), with dicomweb-client.

Credentials come from the environment (``NAPARI_LANDMARKS_DICOMWEB_USER`` / ``NAPARI_LANDMARKS_DICOMWEB_PASSWORD``) or
from a JSON file named by ``NAPARI_LANDMARKS_DICOMWEB_CONFIG`` (``{"user": …, "password": …}``); they are never
printed or logged (a URL given with ``user:password@`` is refused for that reason).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DicomWebError", "connect", "search_series", "fetch_study", "store_instances", "FetchedStudy"]

IMAGE_MODALITIES_SKIPPED = {"SR": "a structured report", "DOC": "a document (PDF)", "KO": "a key object selection",
                            "PR": "a presentation state", "SEG": "a segmentation"}


class DicomWebError(RuntimeError):
    """The PACS cannot be reached or refused a request; the message names the server (never the credentials)."""


def _credentials() -> tuple[str, str] | None:
    user = os.environ.get("NAPARI_LANDMARKS_DICOMWEB_USER")
    password = os.environ.get("NAPARI_LANDMARKS_DICOMWEB_PASSWORD")
    config = os.environ.get("NAPARI_LANDMARKS_DICOMWEB_CONFIG")
    if config and not user:
        try:
            data = json.loads(Path(config).read_text())
            user, password = data.get("user"), data.get("password")
        except (OSError, ValueError, AttributeError) as exc:
            raise DicomWebError(f"the DICOMweb credentials file {config} cannot be read ({type(exc).__name__})") from None
    return (user, password or "") if user else None


def connect(url: str):
    """A dicomweb-client for ``url`` with the credentials of the environment (module doc)."""
    from dicomweb_client.api import DICOMwebClient
    from requests import Session

    parts = urlsplit(url)
    if parts.username or parts.password:
        raise DicomWebError(f"{parts.hostname}: give the credentials in NAPARI_LANDMARKS_DICOMWEB_USER / _PASSWORD "
                            "(or a config file), not in the URL, so that they never appear in a log")
    if parts.scheme not in ("http", "https"):
        raise DicomWebError(f"{url}: a DICOMweb URL starts with http:// or https://")
    session = Session()
    creds = _credentials()
    if creds:
        session.auth = creds
    client = DICOMwebClient(url=url, session=session)
    # dicomweb-client retries every failed request 5 times with a back-off up to 16 s (30 s before an unreachable
    # server is said): 3 attempts, 0.4 + 0.8 s apart, are enough for a busy PACS's 503
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)
    return client


def _describe(url: str, exc: Exception) -> str:
    from requests import HTTPError, RequestException

    host = urlsplit(url).netloc
    if isinstance(exc, HTTPError) and exc.response is not None:
        code = exc.response.status_code
        why = {401: "wrong or missing credentials", 403: "access refused", 404: "not found"}.get(code, "refused")
        return f"the PACS at {host} answered {code} ({why})"
    if isinstance(exc, RequestException):
        return f"the PACS at {host} cannot be reached ({type(exc).__name__})"
    return f"the PACS at {host}: {type(exc).__name__}: {exc}"


def _first(item: dict, tag: str, default=""):
    value = (item.get(tag) or {}).get("Value") or [default]
    v = value[0]
    if isinstance(v, dict):  # a person name
        v = v.get("Alphabetic", "")
    return v


def search_series(url: str, *, patient_id: str | None = None, accession: str | None = None,
                  date: str | None = None, limit: int = 200) -> list[dict]:
    """The series of the studies that match (QIDO-RS): each ``{study, series, patient_id, patient_name, date,
    accession, modality, description, instances}``, films first."""
    client = connect(url)
    filters = {k: v for k, v in (("PatientID", patient_id), ("AccessionNumber", accession), ("StudyDate", date)) if v}
    try:
        studies = client.search_for_studies(search_filters=filters, limit=limit)
        rows = []
        for st in studies:
            suid = _first(st, "0020000D")
            for se in client.search_for_series(suid):
                rows.append({"study": suid, "series": _first(se, "0020000E"), "patient_id": _first(st, "00100020"),
                             "patient_name": str(_first(st, "00100010")), "date": _first(st, "00080020"),
                             "accession": _first(st, "00080050"), "modality": _first(se, "00080060"),
                             "description": _first(se, "0008103E"), "instances": _first(se, "00201209", "")})
    except DicomWebError:
        raise
    except Exception as exc:
        raise DicomWebError(f"search: {_describe(url, exc)}") from None
    return sorted(rows, key=lambda r: (r["modality"] in IMAGE_MODALITIES_SKIPPED, r["date"], r["study"]))


@dataclass
class FetchedStudy:
    study_uid: str
    files: list[Path] = field(default_factory=list)  # the image instances, written to the folder given
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (series / instance UID, why)


def fetch_study(url: str, study_uid: str, dest, series_uid: str | None = None) -> FetchedStudy:
    """The image instances of a study (or of one series of it) as DICOM files under ``dest``; instances that are
    no films (SR, PDF, …) or have no pixels are listed in ``skipped`` with the reason."""
    client = connect(url)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = FetchedStudy(study_uid)
    try:
        series = client.search_for_series(study_uid) if series_uid is None else [{"0020000E": {"Value": [series_uid]}}]
    except Exception as exc:
        raise DicomWebError(f"study {study_uid}: {_describe(url, exc)}") from None
    if not series:
        raise DicomWebError(f"study {study_uid}: the PACS at {urlsplit(url).netloc} has no such study (or it has no "
                            "series)")
    for s in series:
        suid = s["0020000E"]["Value"][0]
        modality = (s.get("00080060", {}).get("Value") or [""])[0]
        if modality in IMAGE_MODALITIES_SKIPPED:
            out.skipped.append((suid, f"series {suid} is {IMAGE_MODALITIES_SKIPPED[modality]}, not a film"))
            continue
        try:
            instances = client.retrieve_series(study_uid, suid)
        except Exception as exc:
            raise DicomWebError(f"study {study_uid}, series {suid}: {_describe(url, exc)}") from None
        for ds in instances:
            uid = str(ds.SOPInstanceUID)
            if "PixelData" not in ds:
                out.skipped.append((uid, f"instance {uid} has no pixels ({getattr(ds, 'Modality', '?')})"))
                continue
            path = dest / f"{uid}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out.files.append(path)
    if not out.files:
        reasons = "; ".join(why for _, why in out.skipped) or "no instances"
        raise DicomWebError(f"study {study_uid}: no image to detect landmarks on ({reasons})")
    return out


def store_instances(url: str, paths) -> None:
    """Store DICOM files (e.g. the structured reports) in the PACS in one request (STOW-RS)."""
    import pydicom

    client = connect(url)
    datasets = [pydicom.dcmread(str(p)) for p in paths]
    try:
        client.store_instances(datasets)
    except Exception as exc:
        raise DicomWebError(f"storing {len(datasets)} report(s): {_describe(url, exc)}") from None
