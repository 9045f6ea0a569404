"""``napari-landmarks``: demo, predict, train, pack, evaluate, calibrate, bench, weights.

Everything except ``demo`` is headless (no napari / Qt import)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path


class CLIError(Exception):
    pass


def _cmd_train(args):
    import logging

    from .training.trainer import Trainer, load_config

    from .inference.device import choose_device
    from .training import distributed

    cfg = load_config(args.config)
    for key in ("root", "device", "out_dir", "num_threads", "epochs", "time_budget_min", "seed", "pack",
                "num_workers", "amp", "init_weights"):
        val = getattr(args, key, None)
        if val is not None:
            cfg[key] = val
    if cfg.get("out_dir") in (None, "runs/model"):
        cfg["out_dir"] = str(Path("runs") / cfg["name"])
    choose_device(cfg["device"])  # a missing device is one line before anything starts
    if cfg["pack"]:  # a wrong pack is one line before the model is built
        from .data.pack import check_pack, read_pack_header

        check_pack(read_pack_header(cfg["pack"]), cfg, source=f"training pack {Path(cfg['pack']).name}")
    info = distributed.init_from_env(cfg["device"])  # torchrun: join the process group (no-op otherwise)
    # the trainer's own lines (each epoch's figures without a progress bar, what it did to the data) reach the log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    try:
        trainer = Trainer(cfg, load_init=not args.resume)
        if info.is_main:
            where = f"{info.world_size} processes × {trainer.device.type}" if info.enabled else str(trainer.device)
            print(f"training '{cfg['name']}' on {where} → {cfg['out_dir']}", file=sys.stderr)
        trainer.load_data()
        result = trainer.fit(resume=args.resume, progress=not args.no_progress)
        if info.is_main:
            clicks = " and ".join(str(c) for c in cfg["val_clicks"])
            print(f"best: mean validation MRE over {clicks} clicks {result['best']:.2f} px at epoch "
                  f"{result['best_epoch']} of {result['epochs']} → {Path(cfg['out_dir']) / 'best.safetensors'}",
                  file=sys.stderr)
            print(json.dumps({**result, "best_is": f"mean validation MRE (original px) over {clicks} clicks"}))
    finally:
        distributed.shutdown()
    return 0


def _cmd_build(args):
    """Every stage the config asks for, into one weights file (build.py)."""
    from .build import run_build

    return run_build(args, main)


def _cmd_train_refiner(args):
    """Train the local second stage (:mod:`models.refiner`) from a YAML config."""
    import logging

    import yaml

    from .training.refiner import train_refiner

    cfg = yaml.safe_load(Path(args.config).read_text()) or {}
    if not isinstance(cfg, dict):
        raise CLIError(f"{args.config}: a refiner config is a mapping of settings")
    for key in ("epochs", "seed", "first_stage"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    out = Path(args.out_dir or Path("runs") / cfg.get("name", "refiner"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    try:
        best = train_refiner(cfg, args.root, out, resume=args.resume)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps(best))
    return 0


def _blend_words(section: dict) -> str:
    if isinstance(section["blend"], str):
        return f"{section['blend']} (the refiner's error × {section.get('error_scale', 1.0):g})"
    return f"{section['blend']:g}"


def _cmd_attach_refiner(args):
    """A copy of a weights file with a trained refiner as its second stage."""
    from .training.refiner import attach_refiner

    out = Path(args.out)
    if out.exists() and not args.overwrite and out.resolve() != Path(args.base).resolve():
        raise CLIError(f"{out} exists: choose another --out or add --overwrite")
    if out.resolve() == Path(args.base).resolve() and not args.overwrite:
        raise CLIError(f"--out {out} is the base file: add --overwrite to write the refiner into it")
    try:
        section = attach_refiner(args.base, args.refiner, out, enabled=not args.off, passes=args.passes,
                                 blend=args.blend, error_scale=args.error_scale)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    cfg = section["config"]
    print(f"wrote {out}: refiner {cfg['size']} × {cfg['size']} crops every {cfg['step']:g} px, {section['passes']} "
          f"pass{'es' if section['passes'] > 1 else ''}, blend {_blend_words(section)}, "
          f"{'on' if section['enabled'] else 'off'}")
    return 0


def _cmd_hold(args):
    """A copy of a weights file (or the file itself) whose card holds the network-alone ``hold``; tensors unchanged."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from .io.files import replaced_atomically
    from .model_card import ModelCard, ModelCardError, check_interaction
    from .weights import resolve_weights

    source = Path(args.weights) if args.weights else resolve_weights(args.model)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists: add --overwrite to write into it")
    try:
        with safe_open(str(source), framework="np") as f:
            meta = dict(f.metadata() or {})
        ModelCard.from_metadata(meta, source=source.name)  # a file without a usable card is refused here
        section = check_interaction({"hold": args.cells, **({"chosen_on": args.chosen_on} if args.chosen_on else {})},
                                    out.name)
    except ModelCardError as exc:
        raise CLIError(str(exc)) from None
    meta["interaction"] = json.dumps(section)
    tensors = load_file(str(source))
    with replaced_atomically(out) as tmp:
        save_file(tensors, tmp, metadata=meta)
    print(f"wrote {out}: after a click, the network alone leaves unclicked landmarks that move less than "
          f"{section['hold']:g} map cells where they were shown" if section["hold"] else
          f"wrote {out}: every landmark moves after a click (no hold)")
    if args.register:
        _register_rewritten(args.register, out, "interaction", section)
    return 0


def _register_rewritten(name: str, out: Path, field: str, value) -> None:
    """Register ``out`` as manifest model ``name``: its entry as it was, with the card field ``field`` rewritten."""
    from . import weights

    entry = weights.get_entry(name, weights.load_manifest())
    entry = {k: v for k, v in entry.items() if k not in ("sha256", "size_bytes")}
    entry[field] = value
    weights.register_model(name, entry, out)
    print(f"registered {name} with its new {field} (sha256 {weights.sha256_file(out)[:12]}…)")


def _cmd_pack(args):
    from .data.pack import write_pack
    from .schemas import load_schema
    from .training.trainer import load_config, phantom_cached_sets, raw_dataset_sets

    cfg = load_config(args.config)
    if args.root:
        cfg["root"] = args.root
    cfg["val_part"] = "val"  # a pack holds the whole validation part; a run's val_part picks from it when it trains
    schema = load_schema(cfg["schema"])
    size = tuple(cfg["input_size"])
    out = Path(args.out or f"{cfg['name']}.pack.npz")
    if cfg["dataset"] == "phantom":
        train_set, val_set = phantom_cached_sets(cfg, size, schema.num_landmarks)
    else:  # a seeded split (a dataset without a split file) is written next to the pack
        split_dest = out.with_name(out.name.removesuffix(".npz") + ".split.json")
        train_set, val_set = raw_dataset_sets(cfg, size, schema, progress=not args.no_progress, split_dest=split_dest)
    header = write_pack(out, cfg, train_set, val_set, quality=args.quality, overwrite=args.overwrite)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB): {header['counts']['train']} training + "
          f"{header['counts']['val']} validation images at {size[0]} × {size[1]}, JPEG quality {args.quality}")
    return 0


def _load_predictor(args, name: str | None = None):
    """The model of --weights or --model, or the manifest model ``name`` (predict's choice for an image)."""
    from .inference import Predictor

    if name is None and getattr(args, "weights", None):
        pred = Predictor.from_file(args.weights, device=args.device)
    else:
        pred = Predictor.from_name(name or args.model, device=args.device)
    if getattr(args, "no_shape_prior", False):
        pred.use_shape_prior = False
    if getattr(args, "no_refiner", False):
        pred.use_refiner = False
    pred.set_precision(getattr(args, "precision", None) or "auto")
    return pred


def _cmd_shape_model(args):
    """Fit a shape model from a dataset's labels and store it in a copy of the weights file (or in place)."""
    from .shape_model import ShapePriorSettings, fit_from_samples, write_into_weights
    from .weights import resolve_weights

    predictor = _load_predictor(args)
    if not args.root and args.dataset != "phantom":
        raise CLIError("--root DIR is required (the dataset folder)")
    samples = _dataset_samples(args, predictor)
    settings = ShapePriorSettings(enabled=not args.off, tau=args.tau, weight=args.weight, shrinkage=args.shrinkage,
                                  zero_click=args.zero_click, click_rounds=args.click_rounds, hold=args.hold)
    sm, left_out = fit_from_samples(samples, predictor.schema.name, settings,
                                    fitted_on=f"{args.dataset} {args.split}" + (
                                        f" of {args.split_file or predictor.info.get('training', {}).get('split_file')}"
                                        if args.split in ("train", "val", "calib", "eval") else ""))
    source = Path(args.weights) if args.weights else resolve_weights(args.model)
    out = Path(args.out)
    if out.exists() and not args.overwrite and out.resolve() != source.resolve():
        raise CLIError(f"{out} exists: choose another --out or add --overwrite")
    write_into_weights(sm, source, out)
    print(f"wrote {out}: shape model of {sm.num_shapes} shapes ({len(left_out)} label sets left out"
          + (f": {', '.join(sorted(left_out)[:5])}{'…' if len(left_out) > 5 else ''}" if left_out else "")
          + f"), prior {'on' if settings.enabled else 'off'} (tau {settings.tau:g}, weight {settings.weight:g}, "
            f"shrinkage {settings.shrinkage:g}{', also before any click' if settings.zero_click else ''}"
            f"{f', {settings.click_rounds} joint rounds after a click' if settings.click_rounds else ''}"
            f"{f', moves under {settings.hold:g} map cells held' if settings.hold else ''})")
    if args.register:
        _register_rewritten(args.register, out, "shape_prior", sm.card_field())
    return 0


def _cmd_ensemble(args):
    """Serve several trained models of one landmark set as one (their logits averaged)."""
    from .models.ensemble import assemble_ensemble

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists: choose another --out or add --overwrite")
    if any(out.resolve() == Path(m).resolve() for m in args.members):
        raise CLIError(f"--out {out} is one of the members: write the ensemble to a new file")
    entry = assemble_ensemble(args.members, out, name=args.name, input_size=args.input_size, weights=args.weights)
    members = entry["config"]["members"]
    print(f"wrote {out}: ensemble '{entry['name']}' of {len(members)} models ("
          + ", ".join(f"{m['name']} at {m['input_size'][0]} × {m['input_size'][1]}, weight {m['weight']:g}"
                      for m in members)
          + f"), input {entry['input_size'][0]} × {entry['input_size'][1]}"
          + (", shape model lent by a member" if entry.get("shape_prior") else "")
          + "; no temperatures or regions yet: run napari-landmarks calibrate --weights on it")
    return 0


def _set_threads(args):
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(int(args.threads))


def _dataset_samples(args, predictor):
    """--split is a dataset split (aasce: training/test; isbi2015: TrainingData/Test1Data/Test2Data) or
    'train'/'val': that part of the committed split file of the model's training data."""
    from .data.datasets import load_dataset
    from .data.splits import apply_split, load_split

    split = args.split
    if args.dataset == "phantom":
        samples = load_dataset("phantom", None, split, predictor.schema.landmarks)
    elif split in ("train", "val", "calib", "eval"):
        training = predictor.info.get("training", {})
        split_file = args.split_file or training.get("split_file")
        if not split_file:
            raise CLIError("--split train/val needs --split-file (the model does not name its split file)")
        parts = load_split(split_file)
        # a split file of another part of the dataset names it (isbi_test1_halves: halves of Test1Data); else the
        # model's training data
        data_split = (parts.get("data_split") or training.get("data_split")
                      or {"aasce": "training", "isbi2015": "TrainingData"}.get(args.dataset))
        samples = load_dataset(args.dataset, args.root, data_split, predictor.schema.landmarks)
        if split not in parts:
            raise CLIError(f"the split file '{split_file}' has no '{split}' part (it has: "
                           f"{', '.join(k for k, v in parts.items() if isinstance(v, list))})")
        samples = apply_split(samples, parts, split)
    else:
        samples = load_dataset(args.dataset, args.root, split, predictor.schema.landmarks)
    if samples and samples[0].coords.shape[0] != predictor.num_landmarks:
        raise CLIError(f"the dataset has {samples[0].coords.shape[0]} landmarks per image but model "
                       f"'{predictor.name}' predicts {predictor.num_landmarks}: wrong model for this dataset")
    if args.limit:
        samples = samples[: args.limit]
    return samples


def _cmd_evaluate(args):
    import numpy as np

    from .evaluation.protocol import evaluate_dataset, format_report

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
        from .evaluation import calibration as cal

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
            from .evaluation.calibration_plots import plot_ere_vs_error, plot_reliability

            d = Path(args.calibration_plots)
            d.mkdir(parents=True, exist_ok=True)
            plot_reliability(cm["_bins"]["before"], cm["_bins"]["after"], d / f"{predictor.name}-reliability.png",
                             title=f"{predictor.name}: reliability before / after temperature scaling")
            be, br, r = cm["_binned"]
            plot_ere_vs_error(be, br, r, d / f"{predictor.name}-ere-vs-error.png",
                              title=f"{predictor.name}: ERE vs true error (groups of {cm['ere_group_size']})", unit=unit)
    print(format_report(result))
    if args.json:
        from .io.files import write_texts

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_texts({Path(args.json): json.dumps(result, indent=1, allow_nan=False)}, overwrite=True)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from .evaluation.plots import plot_mre_curves

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
        from .measurements.cobb import CobbError, cobb_angles

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

        from .measurements.cobb import smape

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

    from .evaluation import calibration as cal

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
        from .training.export import store_temperatures_in_file

        store_temperatures_in_file(args.weights, temps, info, regions, doubt, ere_cal, familiarity)
        print(f"stored {what} in {args.weights}")
        return 0
    from .training.export import store_temperatures

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

    from .ere_calibration import EreCalibration, EreCalibrationError, fit_ere_calibration
    from .evaluation.protocol import collect_ere_and_errors

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
    per_click = ", ".join(f"{c} clicks {np.median(row):.2f} · ERE^{b:.2f}" for c, (row, b) in
                          enumerate(zip(cal.scales, cal.exponents)))
    print(f"expected error (px) stated as scale · ERE^exponent, the scale per landmark (median shown): {per_click}; "
          f"capped at the 99th percentile of each landmark's real errors (median over landmarks "
          f"{np.median(cal.caps[0]):.1f} px before any click)")
    return cal.to_card()


def _fit_regions(args, predictor, samples, temps) -> dict:
    """The conformal regions (regions.py) on the calibration images, with the temperatures just fitted, on the click
    protocol (0…--region-clicks worst-first clicks): the card's ``regions`` field. Too few images: one line."""
    import numpy as np

    from .evaluation.protocol import collect_region_scores
    from .regions import RegionError, fit_regions

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

    from .familiarity import FamiliarityError, fit_familiarity
    from .io.images import ImageError

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
        f = predictor.film_features(image, predictor.predict(image))
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

    from .measurements import validate_definitions

    from .evaluation.protocol import run_click_protocol
    from .io.images import ImageError
    from .measurements.doubt import DEFAULT_LEVEL, DoubtScaleError, fit_doubt_scales, trace_scores

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


def _parse_click(text, predictor):
    try:
        key, pos = text.split(":", 1)
        r, c = (float(v) for v in pos.split(","))
    except ValueError:
        raise CLIError(f"--correct expects INDEX:ROW,COL (e.g. 5:812,301), got {text!r}") from None
    return (int(key) if key.strip().lstrip("-").isdigit() else key.strip()), (r, c)


def _negative_corrections(argv: list[str]) -> list[str]:
    """argparse takes a value such as ``-1:100,100`` after ``--correct`` for an unknown option ("unrecognized
    arguments"): hand each one over as ``--correct=-1:100,100`` (``--correct`` extends its list), so that the
    index is refused in words: it must be 0..K-1."""
    out, inside = [], False
    for tok in argv:
        if inside and re.match(r"-\d+:", tok):
            out.append(f"--correct={tok}")
            continue
        inside = tok == "--correct" or (inside and not tok.startswith("-"))
        out.append(tok)
    return out


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
    from .io.images import IMAGE_EXTENSIONS, is_dicom_file

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
            from .weights import load_manifest

            self.manifest = load_manifest()

    def __call__(self, path: Path, shape):
        from .model_choice import choose_model_for_image, misfit_reason

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


def _cmd_predict(args):
    from .inference import LandmarkSession
    from .io.images import read_image

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
    images, problems = _image_files(args.images)
    for line in problems:
        print(line, file=sys.stderr)
    failures = len(problems)
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
            dest = session.save((out_dir or path.parent) / f"{path.stem}.landmarks.{args.format}",
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
    return 1 if failures else 0


def _cmd_bench(args):
    import numpy as np

    from .evaluation.bench import run_bench

    _set_threads(args)
    predictor = _load_predictor(args)
    if args.image:
        from .io.images import read_image

        image = read_image(args.image).array
    else:
        h, w = args.size
        image = np.random.default_rng(0).normal(128, 40, size=(h, w)).clip(0, 255).astype(np.uint8)
    res = run_bench(predictor, image, runs=args.runs, num_clicks=args.num_clicks)
    for k, v in res.items():
        print(f"{k:>30}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


def _cmd_weights(args):
    from . import weights

    if args.action == "list":
        print(weights.cmd_list())
        return 0
    if args.action == "verify":
        ok, report = weights.cmd_verify(args.names or None)
        print(report)
        return 0 if ok else 1
    if args.action == "fetch":
        if not args.names:
            raise CLIError("weights fetch needs a model name")
        for n in args.names:
            print(weights.cmd_fetch(n))
        return 0
    if args.action == "register":
        from .training.export import register_run

        if len(args.names) != 1 or not args.run_dir:
            raise CLIError("weights register NAME --run-dir DIR")
        entry = register_run(args.names[0], Path(args.run_dir), description=args.description)
        print(f"registered {args.names[0]}: {entry['file']} ({entry['size_bytes'] / 2**20:.1f} MB, sha256 {entry['sha256'][:12]}…)")
        return 0
    if args.action == "remove":
        if not args.names:
            raise CLIError("weights remove NAME [NAME …] [--delete-file]")
        for n in args.names:
            try:
                gone = weights.unregister_model(n, delete_file=args.delete_file)
            except weights.WeightsError as exc:
                raise CLIError(str(exc)) from None
            print(f"removed {n} from the manifest" + (f"; deleted {gone.name}" if gone else ""))
        return 0
    raise CLIError(f"unknown weights action {args.action}")


def _cmd_demo(args):
    from ._system import missing_qt_packages, qt_setup_hint

    missing = missing_qt_packages()
    if missing:  # Qt would abort the process with a message naming the wrong library
        raise CLIError(qt_setup_hint(missing))
    from .napari._demo import run_demo

    corrections = [_parse_click(c, None) for c in (args.correct or [])]
    return run_demo(image=args.image, model=args.model, corrections=corrections, screenshot=args.screenshot,
                    json_out=args.json, keep_open=not (args.screenshot or args.json) or args.keep_open,
                    timeout=args.timeout, shape_prior=not args.no_shape_prior, weights=args.weights)


def _add_dataset_args(p, split_help):
    p.add_argument("--dataset", required=True, choices=["aasce", "isbi2015", "generic", "phantom"])
    p.add_argument("--root", help="dataset folder (not needed for the generated phantom)")
    p.add_argument("--split", required=True, help=split_help)
    p.add_argument("--split-file", dest="split_file", help="split JSON for train/val/calib/eval (default: the model's)")
    p.add_argument("--limit", type=int, help="only the first N images (quick checks)")
    p.add_argument("--no-progress", action="store_true")


def _add_model_args(p, model_help="model name from weights_manifest.yaml (default aasce-spine)",
                    default_model="aasce-spine"):
    p.add_argument("--model", default=default_model, help=model_help)
    p.add_argument("--weights", help="a .safetensors file instead of a manifest name")
    p.add_argument("--device", default="auto", help="auto (cuda → mps → cpu), cuda, mps or cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-shape-prior", dest="no_shape_prior", action="store_true",
                   help="the network alone: do not decode under the model's shape prior (for comparison)")
    p.add_argument("--no-refiner", dest="no_refiner", action="store_true",
                   help="the first stage alone: do not re-find the landmarks with the model's local refiner")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto",
                   help="the networks' arithmetic: fp32, bf16 autocast, or auto (default: bf16 where the CPU computes it natively, else fp32)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-landmarks", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

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

    t = sub.add_parser("train", help="train an interactive model from a YAML config",
                       description="Train the interactive keypoint model (simulated clicks, iterative training, "
                                   "morphology-aware loss). Writes metrics.csv, last.ckpt and best.safetensors "
                                   "to the output folder.")
    t.add_argument("--config", required=True, help="training config YAML (see configs/)")
    t.add_argument("--root", help="dataset root (overrides the config and NAPARI_LANDMARKS_DATA)")
    t.add_argument("--out-dir", dest="out_dir", help="output folder (default runs/<name>)")
    t.add_argument("--device", help="auto (cuda → mps → cpu), cuda, mps or cpu")
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--num-threads", dest="num_threads", type=int, help="torch CPU threads")
    t.add_argument("--time-budget-min", dest="time_budget_min", type=float, help="stop cleanly after N minutes")
    t.add_argument("--resume", action="store_true", help="continue from <out-dir>/last.ckpt")
    t.add_argument("--pack", help="a training pack (napari-landmarks pack) instead of the raw dataset (--root)")
    t.add_argument("--num-workers", dest="num_workers", type=int,
                   help="DataLoader workers for augmentation (default: 0 on CPU, up to 8 per GPU process)")
    t.add_argument("--amp", choices=["none", "bf16", "auto"], help="mixed precision of the forward passes")
    t.add_argument("--init-weights", dest="init_weights", help="start from these weights (same architecture)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    bu = sub.add_parser("build", help="build a complete model from a YAML config: network, shape prior, refiner, "
                                      "hold, calibration — one weights file",
                        description="Train the network, then every stage the config's 'build' section asks for "
                                    "(shape_prior, refiner, hold, calibrate), into one weights file "
                                    "<out-dir>/<name>.safetensors that the viewer opens ('Weights file…' or demo "
                                    "--weights). A stage the data cannot support (too few films) says so with its "
                                    "minimum and is left out. See docs/data-format.md, 'Training on it'.")
    bu.add_argument("--config", required=True, help="training config YAML with an optional 'build' section")
    bu.add_argument("--root", help="dataset root (overrides the config)")
    bu.add_argument("--out-dir", dest="out_dir", help="run folder (default runs/<name>)")
    bu.add_argument("--out", help="the model file to write (default <out-dir>/<name>.safetensors)")
    bu.add_argument("--epochs", type=int, help="override the config's epochs")
    bu.add_argument("--device", help="auto (cuda → mps → cpu), cuda, mps or cpu")
    bu.add_argument("--num-threads", dest="num_threads", type=int, help="torch CPU threads")
    bu.add_argument("--resume", action="store_true", help="continue an interrupted build's training from its checkpoint")
    bu.add_argument("--no-progress", action="store_true")
    bu.set_defaults(func=_cmd_build)

    tr = sub.add_parser("train-refiner", help="train the local second stage that re-finds each landmark in a crop",
                        description="Train a refiner (a compact U-Net on high-resolution crops around each landmark) "
                                    "from a YAML config; validates on the first stage's points of the held-out films "
                                    "and writes metrics.csv, last.safetensors, best.safetensors and last.ckpt (every "
                                    "epoch: --resume continues from it).")
    tr.add_argument("--config", required=True, help="refiner config YAML (see experiments/configs/cpu/*refiner*.yaml)")
    tr.add_argument("--root", required=True, help="dataset root")
    tr.add_argument("--out-dir", dest="out_dir", help="output folder (default runs/<name>)")
    tr.add_argument("--first-stage", dest="first_stage", help="the first stage's weights file (overrides the config)")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --out-dir from its last.ckpt (the same config; --epochs may grow)")
    tr.set_defaults(func=_cmd_train_refiner)

    ar = sub.add_parser("attach-refiner", help="give a weights file a trained refiner as its second stage",
                        description="Write a copy of BASE (a model's weights file) whose predictions are re-found by "
                                    "the refiner of REFINER (a train-refiner run's best.safetensors).")
    ar.add_argument("base", help="the model's weights file")
    ar.add_argument("refiner", help="the refiner's file (train-refiner's best.safetensors)")
    ar.add_argument("--out", required=True, help="the weights file to write")
    ar.add_argument("--passes", type=int, default=1, help="refine this many times in a row (default 1)")
    ar.add_argument("--blend", default="1",
                    help="each point at this weight of the refined place, the rest of the first stage's (default 1); "
                         "or 'expected-error': each point weighted by the inverse square of its stage's expected "
                         "error (the first stage's calibrated ERE against the refiner's own, times --error-scale)")
    ar.add_argument("--error-scale", dest="error_scale", type=float,
                    help="with --blend expected-error: the factor on the refiner's own expected error (its maps are "
                         "not calibrated; choose it on validation: benchmarks/refiner_combine_eval.py compare)")
    ar.add_argument("--off", action="store_true", help="store the refiner switched off")
    ar.add_argument("--overwrite", action="store_true")
    ar.set_defaults(func=_cmd_attach_refiner)

    pk = sub.add_parser("pack", help="write a config's preprocessed train/val sets as one compressed file",
                        description="Preprocess the training and validation images of a training config (intensity "
                                    "normalisation, network size) and write them, JPEG-compressed, with their "
                                    "landmarks into one file that `train --pack` takes in place of the raw dataset "
                                    "(e.g. to train on a GPU machine that does not have the dataset).")
    pk.add_argument("--config", required=True, help="training config YAML (see configs/)")
    pk.add_argument("--root", help="dataset root (overrides the config and NAPARI_LANDMARKS_DATA)")
    pk.add_argument("--out", help="output file (default <config name>.pack.npz)")
    pk.add_argument("--quality", type=int, default=95, help="JPEG quality of the stored images (default 95)")
    pk.add_argument("--overwrite", action="store_true")
    pk.add_argument("--no-progress", action="store_true")
    pk.set_defaults(func=_cmd_pack)

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
    pr.add_argument("images", nargs="+", help="image files and/or folders of images (not their subfolders)")
    pr.add_argument("--out", help="output folder (default: next to each image)")
    pr.add_argument("--format", choices=["json", "csv"], default="json")
    pr.add_argument("--correct", nargs="*", action="extend", metavar="INDEX:ROW,COL",
                    help="corrections applied as clicks (INDEX 0..K-1 or a landmark name)")
    pr.add_argument("--no-fit-check", dest="no_fit_check", action="store_true",
                    help="run --model / --weights even on an image whose shape does not fit it (by default such an "
                         "image is refused: it is probably another kind of film)")
    pr.add_argument("--overwrite", action="store_true", help="replace existing landmark files")
    pr.set_defaults(func=_cmd_predict)

    b = sub.add_parser("bench", help="latency of one interactive update vs the bare network forward",
                       description="Median and p95 over --runs interactive updates on a prepared image, the bare "
                                   "network forward time, and peak memory.")
    _add_model_args(b)
    b.add_argument("--image", help="an image file (default: a synthetic image of --size)")
    b.add_argument("--size", type=int, nargs=2, default=[2375, 890], metavar=("H", "W"),
                   help="synthetic image size (default: the AASCE median, 2375 × 890)")
    b.add_argument("--runs", type=int, default=30)
    b.add_argument("--num-clicks", dest="num_clicks", type=int, default=3)
    b.add_argument("--json", help="write the figures as JSON")
    b.set_defaults(func=_cmd_bench)

    sm = sub.add_parser("shape-model", help="fit the anatomy's shape prior from a dataset's labels into a weights file",
                        description="A Gaussian model of the landmarks' joint positions, fitted from the labels of a "
                                    "split (on the AASCE spine set, films whose vertebrae are out of order are left "
                                    "out), stored with its prior settings in a copy of the weights file; every "
                                    "prediction with that file then decodes the unclicked landmarks under it. Choose "
                                    "the settings on validation data (benchmarks/shape_prior_eval.py).")
    _add_model_args(sm)
    _add_dataset_args(sm, "the labels to fit: 'train' (the model's own training part of its split file) or a "
                          "dataset split")
    sm.add_argument("--out", required=True, help="the weights file to write (may be the --weights file itself)")
    sm.add_argument("--tau", type=float, default=1.0, help="prior width: conditional covariance × tau (default 1)")
    sm.add_argument("--weight", type=float, default=0.9,
                    help="robustness: weight of the Gaussian against a uniform, < 1 (default 0.9)")
    sm.add_argument("--shrinkage", type=float, default=0.05, help="covariance shrinkage toward its diagonal")
    sm.add_argument("--zero-click", dest="zero_click", action="store_true", help="use the prior before any click too")
    sm.add_argument("--click-rounds", dest="click_rounds", type=int, default=0,
                    help="after a click, rounds of each unclicked landmark given all the others (the clicked ones at "
                         "the user's points) after the round given the clicks alone (default 0: the clicks alone)")
    sm.add_argument("--hold", type=float, default=0.0,
                    help="after a click, an unclicked landmark that would move less than this many map cells (the "
                         "network's stride-4 grid) stays where it was shown (default 0: every landmark moves)")
    sm.add_argument("--off", action="store_true", help="store the model but leave the prior off (it did not help)")
    sm.add_argument("--overwrite", action="store_true")
    sm.add_argument("--register", metavar="NAME", help="also register --out as manifest model NAME")
    sm.set_defaults(func=_cmd_shape_model)

    ho = sub.add_parser("hold", help="keep the network's small moves after a click where they were shown",
                        description="Store in a weights file's card how far (in cells of the network's stride-4 map) "
                                    "an unclicked landmark may move after a click, with no shape prior decoding it, "
                                    "before it leaves where it was shown: smaller moves are the network's jitter "
                                    "between updates. Choose the value on validation data "
                                    "(benchmarks/shape_prior_eval.py --alone-hold). Under the shape prior its own "
                                    "hold applies (shape-model --hold).")
    _add_model_args(ho)
    ho.add_argument("cells", type=float, help="map cells (0: every landmark moves)")
    ho.add_argument("--out", required=True, help="the weights file to write (may be the --weights file itself)")
    ho.add_argument("--chosen-on", dest="chosen_on", help="where the value was chosen (stored in the card)")
    ho.add_argument("--overwrite", action="store_true")
    ho.add_argument("--register", metavar="NAME", help="also register --out as manifest model NAME")
    ho.set_defaults(func=_cmd_hold)

    en = sub.add_parser("ensemble", help="serve several trained models of one landmark set as one weights file",
                        description="One weights file whose model runs every member (each at its own input size) "
                                    "and averages their logits; then calibrate it like any model. Members: "
                                    "self-describing weights files (a run's best.safetensors, a registered model).")
    en.add_argument("members", nargs="+", help="the members' weights files (at least two)")
    en.add_argument("--out", required=True, help="the ensemble's weights file to write")
    en.add_argument("--name", help="the model's name (default: the --out file's stem)")
    en.add_argument("--input-size", dest="input_size", type=int, nargs=2, metavar=("H", "W"),
                    help="the ensemble's input size (default: the largest member's)")
    en.add_argument("--weights", type=float, nargs="+", help="one weight per member (default: equal)")
    en.add_argument("--overwrite", action="store_true")
    en.set_defaults(func=_cmd_ensemble)

    w = sub.add_parser("weights", help="list, verify, fetch, register or remove model weights",
                       description="Models in weights_manifest.yaml: list them, verify sha256 hashes, fetch a "
                                   "downloadable variant into the cache (NAPARI_LANDMARKS_CACHE), register a "
                                   "training run's best weights as a shipped fp16 model, or remove one.")
    w.add_argument("action", choices=["list", "verify", "fetch", "register", "remove"])
    w.add_argument("names", nargs="*")
    w.add_argument("--run-dir", dest="run_dir", help="register: the training output folder")
    w.add_argument("--description", default="", help="register: one line for the manifest")
    w.add_argument("--delete-file", dest="delete_file", action="store_true",
                   help="remove: also delete the model's weights file from the package folder")
    w.set_defaults(func=_cmd_weights)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_negative_corrections(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, OSError, KeyError, RuntimeError) as exc:  # OSError: e.g. a SaveError naming the file
        print(f"napari-landmarks {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
