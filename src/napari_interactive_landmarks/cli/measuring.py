"""The commands that measure a model: ``evaluate`` (the click protocol), ``calibrate`` (temperatures, the stated
error, regions, doubt scales, the familiarity check), ``bench`` (latency)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import CLIError, _add_dataset_args, _add_model_args, _dataset_samples, _load_predictor, _set_threads


def _cmd_evaluate(args):
    import numpy as np

    from ..evaluation.protocol import evaluate_dataset, format_report

    _set_threads(args)
    predictor = _load_predictor(args)
    if not args.root and args.dataset != "phantom":
        raise CLIError("--root DIR is required (the dataset folder)")
    samples = _dataset_samples(args, predictor)
    unit = args.unit or ("mm" if all(s.spacing for s in samples) else "px")
    targets = tuple(args.targets) if args.targets else ((20, 30, 40, 50) if unit == "px" else (1.5, 2.0, 2.5, 3.0))
    radii = tuple(args.sdr) if args.sdr else ((2.0, 2.5, 3.0, 4.0) if unit == "mm" else None)
    cobb = CobbCollector() if args.dataset == "aasce" and predictor.num_landmarks == 68 else None
    result = evaluate_dataset(predictor, samples, max_clicks=args.clicks, order=args.order, targets=targets,
                              sdr_radii=radii, unit=unit, seed=args.seed, progress=not args.no_progress,
                              on_trace=cobb, click_noise_px=args.click_noise)
    result.update(model=predictor.name, dataset=args.dataset, split=args.split, precision=predictor.precision,
                  refiner=predictor.refiner_active, shape_prior=predictor.shape_prior_active)
    if result["num_skipped"]:  # unreadable images are reported, the others evaluated
        print(_skipped_summary(result), file=sys.stderr)
        gone = {r["name"] for r in result["skipped"]}
        samples = [s for s in samples if str(s.name) not in gone]
    if cobb is not None:
        result.update(cobb.summary())
    if not args.no_calibration:
        from ..evaluation import calibration as cal

        temps = predictor.temperatures if predictor.temperatures is not None else np.ones(predictor.num_landmarks)
        data = cal.collect(predictor, samples, progress=not args.no_progress, temperatures=temps)  # keeps no logits
        thr = args.error_threshold or (2.0 if unit == "mm" else 20.0)
        cm = cal.metrics(data, temps, thr, unit=unit)
        # NaN (e.g. AUROC when no landmark exceeds the threshold) is written as null
        result.update(cal.public({k: cm[k] for k in ("ece_before", "ece_after", "ere_spearman", "ere_auroc")}))
        result["calibration"] = cal.public(cm)
        result["calibration"]["temperatures_fitted"] = predictor.temperatures is not None
        print(f"ECE {cm['ece_before']:.4f} → {cm['ece_after']:.4f} (temperature scaling"
              f"{'' if predictor.temperatures is not None else ': none fitted, T = 1'}); ERE vs error: Spearman "
              f"{cm['ere_spearman']:.3f}, AUROC(error > {thr:g} {unit}) {cm['ere_auroc']:.3f}, binned r "
              f"{cm['ere_binned_pearson']:.3f} ({cm['ere_binned_pearson_full_groups']:.3f} without the last, partial group)")
        if args.calibration_plots:
            from ..evaluation.calibration_plots import plot_ere_vs_error, plot_reliability

            d = Path(args.calibration_plots)
            d.mkdir(parents=True, exist_ok=True)
            plot_reliability(cm["_bins"]["before"], cm["_bins"]["after"], d / f"{predictor.name}-reliability.png",
                             title=f"{predictor.name}: reliability before / after temperature scaling")
            be, br, r = cm["_binned"]
            plot_ere_vs_error(be, br, r, d / f"{predictor.name}-ere-vs-error.png",
                              title=f"{predictor.name}: ERE vs true error (groups of {cm['ere_group_size']})", unit=unit)
    print(format_report(result))
    if args.json:
        from ..io.files import write_texts

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_texts({Path(args.json): json.dumps(result, indent=1, allow_nan=False)}, overwrite=True)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from ..evaluation.plots import plot_mre_curves

        plot_mre_curves({predictor.name: result}, args.plot, title=f"{predictor.name} on {args.dataset} {args.split}")
    return 0


def _skipped_summary(result: dict, show: int = 3) -> str:
    """One line: how many images evaluate skipped, and why (the first ``show``)."""
    sk = result["skipped"]
    shown = "; ".join(r["reason"] for r in sk[:show]) + (f"; and {len(sk) - show} more" if len(sk) > show else "")
    return f"skipped {len(sk)} of {result['num_images'] + len(sk)} images that could not be read or used: {shown}"


class CobbCollector:
    """Cobb angles (AASCE 2019 method) of the model's and manual revision's landmarks after each click,
    against the dataset's ``angles.csv``: SMAPE per click (the challenge's formula)."""

    def __init__(self):
        self.gt, self.model, self.manual = [], [], []

    @staticmethod
    def _angles(coords, height):
        from ..measurements.cobb import CobbError, cobb_angles

        try:
            return cobb_angles(coords, image_height=height, check_order=False).challenge_angles
        except (CobbError, ValueError):
            return [float("nan")] * 3

    def __call__(self, sample, trace):
        gt = sample.extra.get("cobb_angles")
        if gt is None:
            return
        h = sample.image_shape[0]
        self.gt.append(gt)
        self.model.append([self._angles(c, h) for c in trace.coords])
        self.manual.append([self._angles(c, h) for c in trace.manual_coords])

    def summary(self) -> dict:
        import numpy as np

        from ..measurements.cobb import smape

        if not self.gt:
            return {}
        gt = np.asarray(self.gt, float)
        out = {}
        for key, vals in (("cobb_smape", self.model), ("cobb_smape_manual", self.manual)):
            arr = np.asarray(vals, float)  # (N, S, 3)
            out[key] = [round(float(smape(arr[:, j], gt)), 3) for j in range(arr.shape[1])]
        return out


def _cmd_calibrate(args):
    import numpy as np

    from ..evaluation import calibration as cal

    _set_threads(args)
    predictor = _load_predictor(args)
    samples = _dataset_samples(args, predictor)
    if args.keep_temperatures:
        if predictor.temperatures is None:
            raise CLIError(f"--keep-temperatures: '{predictor.name}' has no temperatures to keep; calibrate without it")
        if args.level is None and args.no_measurement_scales:
            raise CLIError("--keep-temperatures with --no-regions and --no-measurement-scales leaves nothing to fit")
        temps = np.asarray(predictor.temperatures, np.float64)
        info = dict(predictor.info.get("calibration") or {})
        info["regions_and_doubt_scales"] = {"dataset": args.dataset, "split": args.split,
                                            "split_file": args.split_file, "num_images": len(samples)}
        where = f", fitted on {info['dataset']} {info.get('split', '')}".rstrip() if info.get("dataset") else ""
        print(f"temperatures kept as stored (median {np.median(temps):.3f}{where}); regions and doubt scales fitted "
              f"on {len(samples)} images")
    else:
        data = cal.collect(predictor, samples, progress=not args.no_progress)
        temps = cal.fit(data)
        unit = "mm" if all(s.spacing for s in samples) else "px"
        cm = cal.metrics(data, temps, 2.0 if unit == "mm" else 20.0, unit=unit)
        print(f"temperatures: median {np.median(temps):.3f} (range {temps.min():.3f}–{temps.max():.3f}) over "
              f"{len(temps)} landmarks, fitted on {len(samples)} images")
        print(f"on the calibration images themselves: ECE {cm['ece_before']:.4f} → {cm['ece_after']:.4f}")
        info = {"dataset": args.dataset, "split": args.split, "num_images": len(samples),
                "ece_before": round(cm["ece_before"], 5), "ece_after": round(cm["ece_after"], 5)}
    ere_cal = None
    if not args.no_ere_calibration:
        ere_cal = _fit_ere_calibration(args, predictor, samples, temps)
    regions = None
    if args.level is not None:
        regions = _fit_regions(args, predictor, samples, temps)
    doubt = None
    if not args.no_measurement_scales:
        doubt = _fit_doubt_scales(args, predictor, samples, temps)
    familiarity = None
    if not args.no_familiarity:
        familiarity = _fit_familiarity(args, predictor, samples, temps)
    if args.dry_run:
        return 0
    what = f"{len(temps)} {'kept ' if args.keep_temperatures else ''}temperatures"
    what += ", the expected error's scales and caps" if ere_cal else ""
    what += f" and {regions['level']:.0%} regions" if regions else ""
    what += f" and {doubt['level']:.0%} measurement doubt scales" if doubt else ""
    what += " and the familiarity check" if familiarity else ""
    if args.weights:
        from ..training.export import store_temperatures_in_file

        store_temperatures_in_file(args.weights, temps, info, regions, doubt, ere_cal, familiarity)
        print(f"stored {what} in {args.weights}")
        return 0
    from ..training.export import store_temperatures

    store_temperatures(predictor.name, temps, info, regions=regions, doubt_scales=doubt, ere_calibration=ere_cal,
                       familiarity=familiarity)
    print(f"stored {what} for '{predictor.name}' in the manifest")
    return 0


def _fit_ere_calibration(args, predictor, samples, temps) -> dict:
    """The stated expected error's per-landmark, per-click-count scales and caps (ere_calibration.py) on the
    calibration images, with the temperatures just fitted, on the click protocol (0…--region-clicks worst-first
    clicks): the card's ``ere_calibration`` field; the predictor uses it from here on (the regions and the
    measurements' doubt scales fitted after it see the stated ERE). Too few images: one line."""
    import numpy as np

    from ..ere_calibration import EreCalibration, EreCalibrationError, fit_ere_calibration
    from ..evaluation.protocol import collect_ere_and_errors

    predictor.temperatures = np.asarray(temps, np.float64)
    predictor.ere_calibration = None  # the raw ERE of the doubt maps is what is fitted
    raw, err = collect_ere_and_errors(predictor, samples, max_clicks=args.region_clicks,
                                      progress=not args.no_progress)
    try:
        cal = fit_ere_calibration(raw, err, clicks=list(range(args.region_clicks + 1)),
                                  envelope_weight=predictor.envelope_weight,
                                  fitted_on=f"{args.dataset} {args.split} ({len(samples)} images, 0-{args.region_clicks} "
                                            "worst-first clicks)")
    except EreCalibrationError as exc:
        raise CLIError(f"no expected-error calibration fitted: {exc}") from None
    predictor.ere_calibration = EreCalibration.from_card(cal.to_card(), predictor.num_landmarks, predictor.name)
    per_click = ", ".join(f"{c} clicks {np.median(row):.2f} · ERE^{b:.2f}" + (f" + {a:.1f} · film^{g:.2f}" if a else "")
                          for c, (row, b, a, g) in enumerate(zip(cal.scales, cal.exponents, cal.film_terms,
                                                                 cal.film_exponents)))
    print(f"expected error (px) stated as scale · ERE^exponent [+ A · film^g, the film's mean ERE^exponent against "
          f"the calibration films' median, the same for all its points], the scale per landmark (median shown): "
          f"{per_click}; "
          f"capped at the 99th percentile of each landmark's real errors (median over landmarks "
          f"{np.median(cal.caps[0]):.1f} px before any click)")
    return cal.to_card()


def _fit_regions(args, predictor, samples, temps) -> dict:
    """The conformal regions (regions.py) on the calibration images, with the temperatures just fitted, on the click
    protocol (0…--region-clicks worst-first clicks): the card's ``regions`` field. Too few images: one line."""
    import numpy as np

    from ..evaluation.protocol import collect_region_scores
    from ..regions import RegionError, fit_regions

    if not 0.5 <= args.level < 1:
        raise CLIError(f"--level must be in [0.5, 1), got {args.level}")
    predictor.temperatures = np.asarray(temps, np.float64)
    scores = collect_region_scores(predictor, samples, max_clicks=args.region_clicks, progress=not args.no_progress)
    try:
        cal = fit_regions(scores, args.level, pooled={"auto": None, "yes": True, "no": False}[args.pooled],
                          clicks=list(range(args.region_clicks + 1)),
                          fitted_on=f"{args.dataset} {args.split} ({len(samples)} images, 0-{args.region_clicks} "
                                    "worst-first clicks)")
    except RegionError as exc:
        raise CLIError(f"no regions fitted: {exc}") from None
    if args.wide_level is not None and args.wide_level > args.level:
        # the same scores at a wider level: the regions drawn on a film unlike these (familiarity.py)
        try:
            wide = fit_regions(scores, args.wide_level, pooled=None)
            cal.wide_level, cal.wide_radii = wide.level, wide.radii
            print(f"{wide.level:.0%} regions for unfamiliar films: median radius "
                  + ", ".join(f"{c} clicks {np.median(row):.2f}" for c, row in enumerate(wide.radii)))
        except RegionError as exc:
            print(f"no {args.wide_level:.0%} regions for unfamiliar films: {exc}", file=sys.stderr)
    r = cal.radii
    per_click = ", ".join(f"{c} clicks {np.median(row):.2f}" for c, row in enumerate(r))
    print(f"{cal.level:.0%} regions: Mahalanobis radius {'pooled' if cal.pooled else 'per landmark'}, median at "
          f"{per_click} (range {r.min():.2f}–{r.max():.2f}) from {int(np.isfinite(scores).sum())} scores")
    return cal.to_card()


def _fit_familiarity(args, predictor, samples, temps) -> dict | None:
    """The familiarity check (familiarity.py) on the calibration images' 0-click predictions with the temperatures
    just fitted: the card's ``familiarity`` field. Too few images or a model without ERE: a note, no check."""
    import numpy as np

    from ..familiarity import FamiliarityError, fit_familiarity
    from ..io.images import ImageError

    predictor.temperatures = np.asarray(temps, np.float64)
    iterator = samples
    if not args.no_progress:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc="familiarity", unit="img", file=sys.stderr)
    features = []
    for sample in iterator:
        try:
            image = sample.load_image()
        except ImageError:
            continue
        prepared = predictor.prepare(image)  # once, for the prediction and the features
        f = predictor.film_features(prepared, predictor.predict(prepared))
        if f is None:
            print("no familiarity check: the model gives no expected error", file=sys.stderr)
            return None
        features.append(f)
    try:
        check = fit_familiarity(features, fitted_on=f"{args.dataset} {args.split} ({len(features)} images, 0 clicks)")
    except FamiliarityError as exc:
        print(f"no familiarity check: {exc}", file=sys.stderr)
        return None
    print(f"familiarity check: contrast distance limit {check.contrast_limit:.2f}, map breadth limit "
          f"{np.exp(check.breadth_limit):.2f}× the calibration median ({check.level:.0%}, {len(features)} films)")
    return check.to_card()


def _fit_doubt_scales(args, predictor, samples, temps) -> dict | None:
    """The measurements' doubt scales (measurements/doubt.py) on the calibration images, with the temperatures just
    fitted, on the click protocol (0…--region-clicks worst-first clicks): the card's ``doubt_scales`` field, making
    each measurement's ± hold the true value with probability --measurement-level. Too few samples: one line — an
    error when --measurement-level was given, else a note on stderr and no scales (the temperatures and regions are
    still stored). A landmark set without measurements: None."""
    import numpy as np

    from ..measurements import validate_definitions

    from ..evaluation.protocol import run_click_protocol
    from ..io.images import ImageError
    from ..measurements.doubt import DEFAULT_LEVEL, DoubtScaleError, fit_doubt_scales, trace_scores

    explicit = args.measurement_level is not None
    level = args.measurement_level if explicit else DEFAULT_LEVEL
    if not 0.5 <= level < 1:
        raise CLIError(f"--measurement-level must be in [0.5, 1), got {level}")
    if not validate_definitions(predictor.schema):
        print(f"no measurement doubt scales: the landmark set '{predictor.schema.name}' defines no measurements")
        return None
    predictor.temperatures = np.asarray(temps, np.float64)
    records, iterator = [], samples
    if not args.no_progress:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc="measurement doubt", unit="img", file=sys.stderr)
    for s in iterator:
        try:
            tr = run_click_protocol(predictor, s, max_clicks=args.region_clicks, order="worst")
        except ImageError:
            continue
        if tr.ere is None:
            raise CLIError("the model gives no ERE: its measurements have no ± to scale")
        records.append(trace_scores(predictor.schema, {"gt": tr.gt, "coords": tr.coords, "ere": tr.ere,
                                                        "spacing": s.spacing, "image_shape": s.image_shape}))
    try:
        ds = fit_doubt_scales(records, level,
                              fitted_on=f"{args.dataset} {args.split} ({len(records)} images, 0-{args.region_clicks} "
                                        "worst-first clicks)")
    except DoubtScaleError as exc:
        if explicit:
            raise CLIError(f"no measurement doubt scales fitted: {exc}") from None
        print(f"no measurement doubt scales fitted: {exc}; the measurements' ± stays unscaled", file=sys.stderr)
        return None
    v = np.array(list(ds.scales.values()))
    print(f"{ds.level:.0%} measurement ±: scales median {np.median(v):.2f} (range {v.min():.2f}–{v.max():.2f}) over "
          f"{len(v)} measurements" + (f", {len(ds.pooled)} pooled (too few samples of their own)" if ds.pooled else ""))
    return ds.to_card()


def _bench_image(args, predictor):
    """--image, or synthetic noise of --size, or of the size of the model's calibration films (the middle of their
    range, from its familiarity check), or of the AASCE median (2375 × 890)."""
    import numpy as np

    if args.image:
        from ..io.images import read_image

        return read_image(args.image).array
    if args.size:
        h, w = args.size
    elif predictor.familiarity is not None:
        h, w = ((predictor.familiarity.size_min + predictor.familiarity.size_max) / 2).round().astype(int)
    else:
        h, w = 2375, 890
    return np.random.default_rng(0).normal(128, 40, size=(int(h), int(w))).clip(0, 255).astype(np.uint8)


def _print_bench(res: dict) -> None:
    skip = ("stages_ms", "stage_share_pct")
    for k, v in res.items():
        if k not in skip:
            print(f"{k:>30}: {v}")
    print(f"{'stage':>30}  {'median ms':>9}  {'share of the update':>19}")
    for k, v in res["stages_ms"].items():
        print(f"{k:>30}  {v:9.2f}  {res['stage_share_pct'][k]:18.1f} %")


def _cmd_bench(args):
    from ..evaluation.bench import run_bench
    from ..weights import load_manifest

    _set_threads(args)
    if args.model == "all" and not args.weights:
        names = list(load_manifest())
    else:
        names = [None]
    results = []
    for name in names:
        predictor = _load_predictor(args, name)
        if args.after_click_members is not None:
            predictor.after_click_members = args.after_click_members
        res = run_bench(predictor, _bench_image(args, predictor), runs=args.runs, num_clicks=args.num_clicks)
        _print_bench(res)
        if len(names) > 1:
            print()
        results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    return 0


def add_parsers(sub) -> None:
    """This group's commands on the ``napari-landmarks`` parser."""
    e = sub.add_parser("evaluate", help="run the click protocol (MRE per click, NoC, FR, SDR) on a dataset",
                       description="Simulated-click evaluation (Kim et al. 2022): after each click 0..N the MRE of the "
                                   "model and of manual revision; NoC/FR at MRE targets; SDR when spacing is known.")
    _add_model_args(e)
    _add_dataset_args(e, "aasce: training|test; isbi2015: TrainingData|Test1Data|Test2Data; phantom: calib|eval|test; "
                         "or train|val|calib|eval: that part of the model's committed split file")
    e.add_argument("--clicks", type=int, default=10)
    e.add_argument("--order", choices=["worst", "ere", "suggested", "random"], default="worst",
                   help="which landmark the next simulated click fixes (worst = oracle, as in the paper; ere = the "
                        "highest stated expected error; suggested = the viewer's 'check next', the largest expected "
                        "gain)")
    e.add_argument("--click-noise", dest="click_noise", type=float, default=0.0, metavar="PX",
                   help="a simulated user's placement error: Gaussian, this std per axis in original pixels (default 0: "
                        "clicks exactly at the ground truth); the manual-revision baseline gets the same noise")
    e.add_argument("--unit", choices=["px", "mm"], help="default: mm when every image has a pixel spacing")
    e.add_argument("--targets", type=float, nargs="+", help="NoC/FR MRE targets (default 20 30 40 px or 1.5 2 2.5 3 mm)")
    e.add_argument("--sdr", type=float, nargs="+", help="SDR radii in mm (default 2 2.5 3 4 with mm)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", help="write the full result as JSON")
    e.add_argument("--plot", help="write the MRE-per-click curve as PNG")
    e.add_argument("--no-calibration", action="store_true", help="skip ECE / ERE metrics (one extra pass)")
    e.add_argument("--error-threshold", dest="error_threshold", type=float,
                   help="error counted as erroneous for ERE AUROC (default 20 px, or 2 mm)")
    e.add_argument("--calibration-plots", dest="calibration_plots", metavar="DIR",
                   help="write reliability diagrams and ERE-vs-error plots as PNG")
    e.set_defaults(func=_cmd_evaluate)

    c = sub.add_parser("calibrate", help="fit per-landmark temperatures on a calibration split",
                       description="Temperature scaling (one temperature per landmark, network in eval mode, "
                                   "everything else frozen) on 0-click predictions of a calibration split that is "
                                   "disjoint from training and evaluation; stores them with the model.")
    _add_model_args(c)
    _add_dataset_args(c, "calibration images: e.g. 'calib' (AASCE) or 'val' (ISBI), disjoint from evaluation")
    c.add_argument("--dry-run", action="store_true",
                   help="print the temperatures, do not store them (in the manifest for --model, in the file for --weights)")
    c.add_argument("--keep-temperatures", dest="keep_temperatures", action="store_true",
                   help="keep the model's stored temperatures and fit only the regions and doubt scales on this split "
                        "(e.g. on images exchangeable with the ones it will meet, when the temperatures' split is not)")
    c.add_argument("--level", type=float, default=0.95,
                   help="also fit conformal regions holding the true point with this probability (default 0.95)")
    c.add_argument("--no-regions", dest="level", action="store_const", const=None,
                   help="temperatures only (a model's stored regions are then dropped: they belong to old temperatures)")
    c.add_argument("--region-clicks", type=int, default=3,
                   help="the regions are fitted on 0..N worst-first clicks of the click protocol (default 3)")
    c.add_argument("--measurement-level", dest="measurement_level", type=float, default=None,
                   help="also fit the measurements' doubt scales, so that each measurement's ± holds the true value "
                        "with this probability (default 0.9; on the same 0..--region-clicks click protocol; too few "
                        "calibration samples for it: an error when given, else a note and no scales)")
    c.add_argument("--no-measurement-scales", dest="no_measurement_scales", action="store_true",
                   help="no doubt scales (a model's stored ones are then dropped: the ± is the unscaled mean error)")
    c.add_argument("--no-ere-calibration", dest="no_ere_calibration", action="store_true",
                   help="no per-landmark scales and caps of the expected error (a model's stored ones are then "
                        "dropped: the ERE is the doubt maps' own)")
    c.add_argument("--wide-level", dest="wide_level", type=float, default=0.99,
                   help="also fit the regions at this wider level, drawn on a film unlike the calibration films "
                        "(default 0.99)")
    c.add_argument("--no-familiarity", dest="no_familiarity", action="store_true",
                   help="no familiarity check (a model's stored one is then dropped: no film is flagged as unlike the "
                        "calibration films)")
    c.add_argument("--pooled", choices=("auto", "yes", "no"), default="auto",
                   help="one radius for all landmarks, or one each (auto: each when every landmark has enough scores)")
    c.set_defaults(func=_cmd_calibrate)

    b = sub.add_parser("bench", help="latency of one interactive update vs the bare network forward",
                       description="Median and p95 over --runs interactive updates on a prepared image, the bare "
                                   "network forward time, each stage's share (forward, decoding, prior, refiner, "
                                   "hold, ERE, regions, check next, display map), the CPU and whether it computes "
                                   "bf16 natively, and peak memory. --model all: every shipped model in turn.")
    _add_model_args(b)
    b.add_argument("--image", help="an image file (default: a synthetic image of --size)")
    b.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="synthetic image size (default: the middle of the model's calibration films' sizes, else the "
                        "AASCE median, 2375 × 890)")
    b.add_argument("--runs", type=int, default=30)
    b.add_argument("--num-clicks", dest="num_clicks", type=int, default=3)
    b.add_argument("--after-click-members", dest="after_click_members", type=int, nargs="+",
                   help="an ensemble's members that run after a click (default: all; issue 39 item 2)")
    b.add_argument("--json", help="write the figures as JSON")
    b.set_defaults(func=_cmd_bench)
