"""The commands that build a model: ``build`` (every stage in one), ``train``, ``train-refiner``, ``attach-refiner``,
``pack``, ``shape-model``, ``hold``, ``ensemble``, ``weights``, ``finetune`` (adapt a model to a site's films)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import CLIError, _add_dataset_args, _add_model_args, _dataset_samples, _load_predictor


def _cmd_train(args):
    import logging

    from ..training.trainer import Trainer, load_config

    from ..inference.device import choose_device
    from ..training import distributed

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
        from ..data.pack import check_pack, read_pack_header

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
    from ..build import run_build
    from . import main

    return run_build(args, main)


def _cmd_train_refiner(args):
    """Train the local second stage (:mod:`models.refiner`) from a YAML config."""
    import logging

    import yaml

    from ..training.refiner import train_refiner

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
    from ..training.refiner import attach_refiner

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

    from ..io.files import replaced_atomically
    from ..model_card import ModelCard, ModelCardError, check_interaction
    from ..weights import resolve_weights

    source = Path(args.weights) if args.weights else resolve_weights(args.model)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists: add --overwrite to write into it")
    try:
        with safe_open(str(source), framework="np") as f:
            meta = dict(f.metadata() or {})
        ModelCard.from_metadata(meta, source=source.name)  # a file without a usable card is refused here
        section = check_interaction({"hold": args.cells, **({"chosen_on": args.chosen_on} if args.chosen_on else {}),
                                     **({"after_click_members": args.after_click_members}
                                        if args.after_click_members else {})}, out.name)
    except ModelCardError as exc:
        raise CLIError(str(exc)) from None
    meta["interaction"] = json.dumps(section)
    tensors = load_file(str(source))
    with replaced_atomically(out) as tmp:
        save_file(tensors, tmp, metadata=meta)
    print(f"wrote {out}: after a click, the network alone leaves unclicked landmarks that move less than "
          f"{section['hold']:g} map cells where they were shown" if section["hold"] else
          f"wrote {out}: every landmark moves after a click (no hold)")
    if section.get("after_click_members"):
        print(f"after a click only the ensemble's member(s) {section['after_click_members']} run; each unclicked point "
              "is the full model's fully automatic answer moved by what the clicks changed in theirs")
    if args.register:
        _register_rewritten(args.register, out, "interaction", section)
    return 0


def _register_rewritten(name: str, out: Path, field: str, value) -> None:
    """Register ``out`` as manifest model ``name``: its entry as it was, with the card field ``field`` rewritten."""
    from .. import weights

    entry = weights.get_entry(name, weights.load_manifest())
    entry = {k: v for k, v in entry.items() if k not in ("sha256", "size_bytes")}
    entry[field] = value
    weights.register_model(name, entry, out)
    print(f"registered {name} with its new {field} (sha256 {weights.sha256_file(out)[:12]}…)")


def _cmd_pack(args):
    from ..data.pack import write_pack
    from ..schemas import load_schema
    from ..training.trainer import load_config, phantom_cached_sets, raw_dataset_sets

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


def _cmd_shape_model(args):
    """Fit a shape model from a dataset's labels and store it in a copy of the weights file (or in place)."""
    from ..shape_model import ShapePriorSettings, fit_from_samples, write_into_weights
    from ..weights import resolve_weights

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
    from ..models.ensemble import assemble_ensemble

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


def _cmd_finetune(args):
    from ..finetune import FinetuneError, finetune

    if args.dataset != "generic":
        raise CLIError(f"--dataset {args.dataset}: finetune reads the generic format (a study's export, or a folder "
                       "with landmarks.csv); see docs/data-format.md")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists: choose another --out or add --overwrite")
    try:
        report = finetune(args.weights or args.model, args.root, out, epochs=args.epochs,
                          time_budget_min=args.time_budget_min, lr=args.lr, held_aside=args.held_aside,
                          seed=args.seed, work_dir=args.work_dir, resume=args.resume, threads=args.threads,
                          progress=not args.no_progress)
    except FinetuneError as exc:
        raise CLIError(str(exc)) from None
    for line in report.lines():
        print(line)
    return 0


def _cmd_weights(args):
    from .. import weights

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
        from ..training.export import register_run

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


def _add_finetune_parser(sub) -> None:
    f = sub.add_parser("finetune", help="adapt a model to your own films (a study's export, or any generic folder)",
                       description="Fine-tune every network of a shipped or own model on the annotated films under "
                                   "--root (generic format), keeping a fifth of them aside (fixed seed): the last "
                                   "epoch is kept and measured against the base model on the films held aside at "
                                   "0 / 1 / 3 worst-first corrections. On the CPU: bf16 where native, a checkpoint "
                                   "every epoch, --resume. The refiner, prior, hold and the calibrated doubt are "
                                   "kept from the base model; the card records the lineage. Writes --out only when "
                                   "everything succeeded.")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model of weights_manifest.yaml")
    src.add_argument("--weights", help="a weights file (e.g. one written by build or an earlier finetune)")
    f.add_argument("--root", required=True, help="the folder of annotated films (landmarks.csv or a JSON per film)")
    f.add_argument("--dataset", default="generic", help="the folder's format (generic)")
    f.add_argument("--out", required=True, help="the adapted model's .safetensors file")
    f.add_argument("--epochs", type=int, default=12, help="passes over the films (default 12)")
    f.add_argument("--time-budget-min", dest="time_budget_min", type=float,
                   help="stop after this many minutes (shared among the networks by their input size); the last "
                        "epoch reached is kept")
    f.add_argument("--lr", type=float, default=3e-4, help="learning rate, cosine over the epochs (default 3e-4)")
    f.add_argument("--held-aside", dest="held_aside", type=float, default=0.2,
                   help="the share of the films kept aside to measure the result (default 0.2, at least one)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--work-dir", dest="work_dir", help="checkpoints and logs (default: <out>.finetune next to --out)")
    f.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints")
    f.add_argument("--threads", type=int, help="torch CPU threads")
    f.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    f.add_argument("--no-progress", dest="no_progress", action="store_true")
    f.set_defaults(func=_cmd_finetune)


def add_parsers(sub) -> None:
    """This group's commands on the ``napari-landmarks`` parser."""
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
    ho.add_argument("--after-click-members", dest="after_click_members", type=int, nargs="+",
                    help="an ensemble's members that run after a click (default: all): each unclicked point is then the "
                         "full model's fully automatic answer moved by what the clicks changed in theirs")
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
    _add_finetune_parser(sub)
