"""The commands a user runs on films: ``predict`` and ``study`` (headless) and ``demo`` (the viewer)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .common import CLIError, _add_model_args, _load_predictor, _parse_click, _set_threads


def _output_folder(out) -> Path | None:
    """--out as a folder that exists (made now when missing), or one line saying why it cannot be one."""
    if not out:
        return None
    d = Path(out)
    blocked = next((q for q in (d, *d.parents) if q.exists() and not q.is_dir()), None)
    if blocked is not None:
        raise CLIError(f"--out {d}: {blocked} is a file, not a folder; give a folder for the landmark files")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"--out {d}: cannot create this folder ({exc.strerror or exc})") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise CLIError(f"--out {d}: this folder is not writable")
    return d


def _image_files(paths) -> tuple[list[Path], list[str]]:
    """The files to predict on: each file as given, and each folder's images (by extension, or a DICOM by its
    content; not its subfolders). Returns them with one line for each folder that holds no image."""
    from ..io.images import IMAGE_EXTENSIONS, is_dicom_file

    files, problems = [], []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)
            continue
        found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                       and (f.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_file(f)))
        if not found:
            problems.append(f"{p}: skipped: this folder holds no image (PNG/JPEG/TIFF/BMP/DICOM)")
        files.extend(found)
    return files, problems


class _ModelForImage:
    """predict's model for each image. --weights / --model: that model, refusing an image it does not fit (the
    input aspect ratio, as the widget warns) unless --no-fit-check; neither: the shipped model that fits the
    image (:func:`~.model_choice.choose_model_for_image`, the widget's choice), each loaded once."""

    def __init__(self, args):
        self.args = args
        self.fixed = _load_predictor(args) if (args.weights or args.model) else None
        self.manifest = None
        self.loaded = {}
        if self.fixed is None:
            from ..weights import load_manifest

            self.manifest = load_manifest()

    def __call__(self, path: Path, shape):
        from ..model_choice import choose_model_for_image, misfit_reason

        if self.fixed is not None:
            why = None if self.args.no_fit_check else misfit_reason(self.fixed.name, self.fixed.info, shape,
                                                                    image_name=path.name, synthetic=None)
            if why:
                raise CLIError(f"{why} Not run: choose the model that fits it, or --no-fit-check runs this one anyway")
            return self.fixed
        name = choose_model_for_image(self.manifest, shape, synthetic=False)
        if name is None:
            raise CLIError("the weights manifest lists no model")
        why = misfit_reason(name, self.manifest[name], shape, image_name=path.name, synthetic=False)
        if why:
            raise CLIError(f"no shipped model fits it: {why} Not run (--model NAME --no-fit-check runs one anyway)")
        if name not in self.loaded:
            self.loaded[name] = _load_predictor(self.args, name)
        return self.loaded[name]


def _cmd_predict_on_dask(args) -> int:
    """predict --workers N / --scheduler ADDRESS: the films on a Dask cluster (batch.py)."""
    from ..batch import BatchError, connect, predict_on_dask

    if args.correct or args.dicomweb:
        raise CLIError("--workers / --scheduler predict whole archives: without --correct or --dicomweb")
    if not args.out:
        raise CLIError("--workers / --scheduler need --out DIR (every film's file goes there; a re-run resumes)")
    out_dir = _output_folder(args.out)  # refused here when it cannot be written: before any work starts
    images, problems = _image_files(args.images)
    for line in problems:
        print(line, file=sys.stderr)
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // max(1, args.workers or 1)) if not args.scheduler else args.threads
    try:
        client = connect(args.scheduler, args.workers, threads)
    except BatchError as exc:
        raise CLIError(str(exc)) from None
    try:
        print(f"Dask: {len(client.scheduler_info().get('workers', {}))} worker(s); dashboard {client.dashboard_link}",
              file=sys.stderr)
        summary = predict_on_dask(images, out_dir, client, model=args.model, weights=args.weights, fmt=args.format,
                                  overwrite=args.overwrite, precision=args.precision, threads_per_worker=threads,
                                  total=len(images), fit_check=not args.no_fit_check)
    except BatchError as exc:
        raise CLIError(str(exc)) from None
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None and not args.scheduler:
            cluster.close()
    print(f"{len(summary.written)} written, {len(summary.skipped)} already done, {len(summary.failed)} failed in "
          f"{summary.seconds:.1f} s ({summary.films_per_second:.2f} films/s); summary: {out_dir / 'predict-summary.csv'}",
          file=sys.stderr)
    for film, why in summary.failed:
        print(f"{film}: failed: {why}", file=sys.stderr)
    return 1 if summary.failed or problems else 0


def _cmd_predict(args):
    from ..inference import LandmarkSession
    from ..io.images import read_image

    if args.workers or args.scheduler:
        return _cmd_predict_on_dask(args)
    _set_threads(args)
    out_dir = _output_folder(args.out)
    clicks = dict(_parse_click(c, None) for c in (args.correct or []))
    model_for = _ModelForImage(args)
    if model_for.fixed is not None:  # a wrong index is one line before any image is read
        for key in clicks:
            try:
                model_for.fixed.schema.index(key)
            except (IndexError, KeyError) as exc:
                raise CLIError(f"--correct: {exc.args[0]}") from None
    fetched = None
    if args.dicomweb:  # the study's films from the PACS (io/dicomweb.py); the reports go back with --store-sr
        import tempfile

        from ..io.dicomweb import DicomWebError, fetch_study

        if not args.study:
            raise CLIError("--dicomweb needs --study UID (and optionally --series UID)")
        if args.images:
            raise CLIError("give either image files or --dicomweb, not both")
        args.format = "sr" if args.store_sr else args.format
        work = Path(tempfile.mkdtemp(prefix="napari-landmarks-dicomweb-"))
        try:
            fetched = fetch_study(args.dicomweb, args.study, work, series_uid=args.series)
        except DicomWebError as exc:
            raise CLIError(str(exc)) from None
        for _, why in fetched.skipped:
            print(f"study {args.study}: skipped {why}", file=sys.stderr)
        out_dir = out_dir or work
        images, problems = list(fetched.files), []
    elif args.store_sr:
        raise CLIError("--store-sr stores the reports in the PACS the films came from: give --dicomweb and --study")
    elif not args.images:
        raise CLIError("give image files or folders, or --dicomweb URL --study UID")
    else:
        images, problems = _image_files(args.images)
    for line in problems:
        print(line, file=sys.stderr)
    failures = len(problems)
    written = []
    for path in images:
        try:
            img = read_image(path)
            predictor = model_for(path, img.array.shape[:2])
            if model_for.fixed is None:
                print(f"{path}: model '{predictor.name}' (the shipped model that fits its "
                      f"{img.array.shape[0]} × {img.array.shape[1]} shape)", file=sys.stderr)
            session = LandmarkSession(predictor, img.array, spacing=img.spacing, image_path=str(path))
            session.detect()
            if clicks:
                session.correct_many(clicks)
            # the files the viewer saves: each point's expected error, each measurement with its doubt
            dest = session.save((out_dir or path.parent) / f"{path.stem}.landmarks.{'sr.dcm' if args.format == 'sr' else args.format}",
                                overwrite=args.overwrite)
        except FileExistsError as exc:
            target = getattr(exc, "target", None) or exc.filename or exc
            print(f"{path}: not written: {target} already exists (use --overwrite to replace it)", file=sys.stderr)
            failures += 1
            continue
        except (CLIError, ValueError, RuntimeError, OSError) as exc:
            text = str(exc)  # most messages name the file already
            print(f"{path}: skipped: {text.removeprefix(f'{path}: ')}", file=sys.stderr)
            failures += 1
            continue
        for m in session.measurements().values():  # as the viewer's table shows them, with the reason for doubt
            why = m.reason if not m.available else (m.doubt if m.uncertain else None)
            print(f"  {m.name}: {m.shown()}" + (f" ({why})" if why else ""), file=sys.stderr)
        print(dest)
        written.append(dest)
    if fetched is not None and args.store_sr:
        from ..io.dicomweb import DicomWebError, store_instances

        if failures:  # nothing half-stored: the reports go back only when every film of the study got one
            raise CLIError(f"study {args.study}: {failures} film(s) failed; no report stored in the PACS (the "
                           f"{len(written)} written are in {out_dir})")
        try:
            store_instances(args.dicomweb, written)
        except DicomWebError as exc:
            raise CLIError(str(exc)) from None
        print(f"stored {len(written)} report(s) in study {args.study}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_demo(args):
    from .._system import missing_qt_packages, qt_setup_hint

    missing = missing_qt_packages()
    if missing:  # Qt would abort the process with a message naming the wrong library
        raise CLIError(qt_setup_hint(missing))
    from ..napari._demo import run_demo

    corrections = [_parse_click(c, None) for c in (args.correct or [])]
    return run_demo(image=args.image, model=args.model, corrections=corrections, screenshot=args.screenshot,
                    json_out=args.json, keep_open=not (args.screenshot or args.json) or args.keep_open,
                    timeout=args.timeout, shape_prior=not args.no_shape_prior, weights=args.weights)


def _cmd_study(args):
    from ..study import Study, StudyError, StudyStoreError

    _set_threads(args)
    try:
        st = Study.open(args.folder, store=args.store, model=args.model, recover=args.recover)
    except StudyStoreError as exc:
        raise CLIError(str(exc)) from None
    with st:
        for note in st.notes:
            print(note, file=sys.stderr)
        if st.read_only and (args.detect or args.export):
            raise CLIError(f"{args.folder}: {st.read_only_reason}")
        if args.detect:  # every film not opened yet gets the model's points (a head start; nothing is reviewed)
            for i, f in enumerate(st.films):
                if f.status == "not opened":
                    try:
                        st.open_film(i)
                    except StudyError as exc:
                        print(f"skipped {exc}", file=sys.stderr)
        width = max(len(f.path) for f in st.films)
        for i, f in enumerate(st.films):
            mark = ">" if i == st.current else " "
            print(f"{mark} {i + 1:4d}  {f.path:<{width}}  {f.describe()}{'  (' + f.model + ')' if f.model else ''}")
        print(st.describe() + (f"; {st.read_only_reason}" if st.read_only else ""))
        if args.export:
            try:
                written = st.export(args.export, formats=args.format, include=args.include,
                                    copy_images=args.copy_images, overwrite=args.overwrite)
            except StudyError as exc:
                raise CLIError(str(exc)) from None
            for fmt, paths in written.items():
                for p in paths:
                    print(f"{fmt}: {p}")
    return 0


def add_parsers(sub) -> None:
    """This group's commands on the ``napari-landmarks`` parser."""
    d = sub.add_parser("demo", help="open the viewer with the landmark widget, detect, apply corrections",
                       description="Open napari with the dock widget on IMAGE (default: the generated spine phantom "
                                   "with its tiny model), detect, apply each --correct through the Points layer "
                                   "exactly as a drag does, wait for the model, then write a screenshot and/or the "
                                   "final points as JSON. Needs a display (on a headless machine: xvfb-run).")
    d.add_argument("image", nargs="?", help="a radiograph (PNG/JPEG/TIFF/BMP/DICOM); default: synthetic phantom")
    d.add_argument("--model", help="manifest name (default: phantom-spine without IMAGE; with one, the shipped model that fits it)")
    d.add_argument("--weights", help="a model's weights file instead (e.g. what napari-landmarks build wrote)")
    d.add_argument("--correct", nargs="*", action="extend", metavar="INDEX:ROW,COL",
                   help="corrections, applied one after another")
    d.add_argument("--screenshot", help="write a PNG of the viewer window")
    d.add_argument("--json", help="write the final points as JSON")
    d.add_argument("--keep-open", action="store_true", help="keep the viewer open after writing the outputs")
    d.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each model update")
    d.add_argument("--no-shape-prior", dest="no_shape_prior", action="store_true",
                   help="start with the anatomy's shape prior off (the widget's checkbox)")
    d.set_defaults(func=_cmd_demo)

    pr = sub.add_parser("predict", help="detect landmarks in images and write them as JSON or CSV",
                        description="Detect landmarks in each IMAGE (PNG/JPEG/TIFF/BMP/DICOM, or a folder of them) "
                                    "with the shipped model that fits it (as the viewer chooses) or the one given; "
                                    "optional corrections re-run the model with them as clicks. Writes what the "
                                    "viewer saves: each point with its expected error (ERE), each measurement "
                                    "with its expected error and doubt (CSV: plus <stem>.measurements.csv). An "
                                    "image that fails is reported in one line, the others still processed; the "
                                    "exit status is 1 when any failed.")
    _add_model_args(pr, model_help="model name from weights_manifest.yaml (default: for each image, the shipped "
                                   "model that fits it)", default_model=None)
    pr.add_argument("images", nargs="*", help="image files and/or folders of images (not their subfolders)")
    pr.add_argument("--dicomweb", metavar="URL",
                    help="fetch the films of --study from this DICOMweb server instead (credentials: "
                         "NAPARI_LANDMARKS_DICOMWEB_USER / _PASSWORD or NAPARI_LANDMARKS_DICOMWEB_CONFIG)")
    pr.add_argument("--study", metavar="UID", help="with --dicomweb: the study's Study Instance UID")
    pr.add_argument("--series", metavar="UID", help="with --dicomweb: only this series of the study")
    pr.add_argument("--workers", type=int, metavar="N",
                    help="predict on a Dask LocalCluster of N worker processes (torch threads: the cores shared among "
                         "them unless --threads); a re-run skips films already done; predict-summary.csv in --out")
    pr.add_argument("--scheduler", metavar="ADDRESS",
                    help="predict on an existing Dask cluster (e.g. tcp://host:8786) instead")
    pr.add_argument("--store-sr", dest="store_sr", action="store_true",
                    help="with --dicomweb: store each film's structured report in the same study (all or none)")
    pr.add_argument("--out", help="output folder (default: next to each image)")
    pr.add_argument("--format", choices=["json", "csv", "sr"], default="json",
                    help="json (default), csv, or sr: a DICOM Comprehensive SR (TID 1500) referencing a DICOM film "
                         "(<stem>.landmarks.sr.dcm)")
    pr.add_argument("--correct", nargs="*", action="extend", metavar="INDEX:ROW,COL",
                    help="corrections applied as clicks (INDEX 0..K-1 or a landmark name)")
    pr.add_argument("--no-fit-check", dest="no_fit_check", action="store_true",
                    help="run --model / --weights even on an image whose shape does not fit it (by default such an "
                         "image is refused: it is probably another kind of film)")
    pr.add_argument("--overwrite", action="store_true", help="replace existing landmark files")
    pr.set_defaults(func=_cmd_predict)

    st = sub.add_parser("study", help="a folder of films as a study: its status, a head start, exports",
                        description="The study of the films under FOLDER (its annotation store: FOLDER/.landmarks-study, "
                                    "shared with the viewer's dataset mode): lists each film with its status (not "
                                    "opened / n points corrected / reviewed / skipped and why); --detect gives every "
                                    "film not yet opened the model's points; --export writes the reviewed films as "
                                    "the project's generic training set, CSV and COCO keypoints. Refused while "
                                    "another viewer or process holds the study.")
    st.add_argument("folder", help="the study's folder of films (searched recursively)")
    st.add_argument("--store", help="the annotation store (default: FOLDER/.landmarks-study)")
    st.add_argument("--model", help="one model for every film (default: for each film the shipped model that fits it)")
    st.add_argument("--threads", type=int, help="torch CPU threads")
    st.add_argument("--detect", action="store_true", help="detect the landmarks of every film not opened yet")
    st.add_argument("--export", metavar="OUT", help="write the exports into folder OUT")
    st.add_argument("--format", nargs="+", choices=["generic", "csv", "coco"], default=["generic", "csv", "coco"])
    st.add_argument("--include", choices=["reviewed", "opened"], default="reviewed",
                    help="which films to export (default: the reviewed ones)")
    st.add_argument("--copy-images", dest="copy_images", action="store_true",
                    help="copy the films into the export (default: the exports name them where they are)")
    st.add_argument("--overwrite", action="store_true", help="replace existing export files")
    st.add_argument("--recover", action="store_true",
                    help="a store file that cannot be read: set it aside and continue from its last good copy")
    st.set_defaults(func=_cmd_study)
