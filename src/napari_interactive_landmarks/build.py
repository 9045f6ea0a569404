"""One command builds a complete model: ``napari-landmarks build --config C``.

It runs every stage the config asks for, in the order each needs the one before, into **one** weights file
(``<out_dir>/<name>.safetensors``):

1. **network** — ``train`` (the trainer also fits a shape model of the training labels into its best weights);
2. **shape prior** — ``build.shape_prior``: the shape model refitted on the training part with these settings
   (``enabled``, ``tau``, ``weight``, ``shrinkage``, ``zero_click``, ``click_rounds``, ``hold``); absent: the
   trainer's shape model is kept with the prior off;
3. **refiner** — ``build.refiner``: a refiner config (``train-refiner``) trained on the first stage and attached;
4. **hold** — ``build.hold``: the network-alone hold in map cells (``hold``);
5. **calibration** — ``build.calibrate`` (``split``: default ``val``, ``region_clicks``: default 3, ``level``: 0.95):
   temperatures, the stated error's scales and caps, the conformal regions, the measurements' doubt scales and the
   familiarity check, on the held-out part of the run's split (last: it measures the finished model).

Each stage prints what it did with units; a stage that cannot be done with this data (too few films for a shape
model, regions or the familiarity check) says so with the minimum, and the build goes on without it. The separate
commands stay for experts (each stage is one of them). Minimums: a shape model needs at least max(10, K) training
label sets (K landmarks); 95 % regions need 19 calibration scores (per landmark, else pooled over landmarks); the
stated error's per-landmark scales need 10 calibration films (else pooled); the familiarity check 49 calibration
films.

Core module: no napari / Qt.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

BUILD_KEYS = {"shape_prior", "refiner", "hold", "calibrate"}
SHAPE_KEYS = {"enabled", "tau", "weight", "shrinkage", "zero_click", "click_rounds", "hold"}
CALIBRATE_KEYS = {"split", "region_clicks", "level"}


class BuildError(ValueError):
    """A config whose ``build`` section cannot be followed (named keys, values), said before anything runs."""


def build_section(cfg: dict, source: str) -> dict:
    """The config's ``build`` section, checked (unknown keys and wrong types are one line naming ``source``)."""
    section = cfg.get("build") or {}
    if not isinstance(section, dict):
        raise BuildError(f"{source}: 'build' must be a mapping of stages ({', '.join(sorted(BUILD_KEYS))})")
    unknown = set(section) - BUILD_KEYS
    if unknown:
        raise BuildError(f"{source}: unknown build stages {sorted(unknown)} (known: {sorted(BUILD_KEYS)})")
    for key, known in (("shape_prior", SHAPE_KEYS), ("calibrate", CALIBRATE_KEYS)):
        sub = section.get(key)
        if sub is not None and not isinstance(sub, dict):
            raise BuildError(f"{source}: build.{key} must be a mapping ({', '.join(sorted(known))})")
        bad = set(sub or {}) - known
        if bad:
            raise BuildError(f"{source}: unknown build.{key} settings {sorted(bad)} (known: {sorted(known)})")
    hold = section.get("hold")
    if hold is not None and (isinstance(hold, bool) or not isinstance(hold, (int, float)) or hold < 0):
        raise BuildError(f"{source}: build.hold must be a number of map cells ≥ 0, got {hold!r}")
    refiner = section.get("refiner")
    if refiner is not None and not Path(str(refiner)).is_file():
        raise BuildError(f"{source}: build.refiner names a refiner config that does not exist: {refiner}")
    return section


def run_build(args, run_command) -> int:
    """The ``build`` command. ``run_command(argv)`` runs one of the package's commands (``cli.main`` without its
    error handling) and returns its exit code."""
    from .training.trainer import load_config

    cfg = load_config(args.config)
    section = build_section(cfg, args.config)
    name = cfg["name"]
    out_dir = Path(args.out_dir or (cfg["out_dir"] if cfg.get("out_dir") not in (None, "runs/model")
                                    else Path("runs") / name))
    root = args.root or cfg.get("root")
    if cfg["dataset"] != "phantom" and not root:
        raise BuildError(f"{args.config}: no dataset folder: set 'root' in the config or pass --root")
    out = Path(args.out or out_dir / f"{name}.safetensors")
    common = ["--no-progress"] if args.no_progress else []
    threads = ["--threads", str(args.num_threads)] if args.num_threads else []

    def stage(title: str, argv: list[str]) -> None:
        print(f"\n== {title}: napari-landmarks {' '.join(argv)}", file=sys.stderr, flush=True)
        rc = run_command(argv)
        if rc:
            raise BuildError(f"the stage '{title}' failed (exit code {rc}); the files so far are in {out_dir}")

    # 1. the network (its best weights, with a shape model of the training labels where they make one)
    train = ["train", "--config", str(args.config), "--out-dir", str(out_dir)] + common
    for flag, value in (("--root", args.root), ("--epochs", args.epochs), ("--num-threads", args.num_threads),
                        ("--device", args.device)):
        if value is not None:
            train += [flag, str(value)]
    if args.resume:
        train.append("--resume")
    stage("1/5 network", train)
    best = out_dir / "best.safetensors"
    if not best.is_file():
        raise BuildError(f"training wrote no {best}: it never validated (val_every larger than the epochs?)")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, out)
    data = ["--dataset", cfg["dataset"]] + (["--root", str(root)] if root else [])
    model = ["--weights", str(out), "--device", "cpu" if args.device in (None, "auto") else args.device] + threads

    # 2. the shape prior's settings (the trainer's shape model is otherwise kept, its prior off)
    sp = section.get("shape_prior")
    if sp is not None:
        argv = ["shape-model"] + model + data + ["--split", "train", "--out", str(out), "--overwrite"] + common
        for key in ("tau", "weight", "shrinkage", "click_rounds", "hold"):
            if key in sp:
                argv += [f"--{key.replace('_', '-')}", str(sp[key])]
        if sp.get("zero_click"):
            argv.append("--zero-click")
        if not sp.get("enabled", True):
            argv.append("--off")
        try:
            stage("2/5 shape prior", argv)
        except BuildError as exc:
            print(f"no shape prior: {exc} (a shape model needs at least max(10, K) training label sets for K "
                  "landmarks)", file=sys.stderr)
    else:
        print("\n== 2/5 shape prior: not asked for (build.shape_prior); the trainer's shape model, if any, is "
              "stored with the prior off", file=sys.stderr)
        _prior_off(out)

    # 3. the refiner
    if section.get("refiner"):
        ref_dir = out_dir / "refiner"
        argv = ["train-refiner", "--config", str(section["refiner"]), "--root", str(root), "--out-dir", str(ref_dir),
                "--first-stage", str(out)]
        if args.resume and (ref_dir / "last.ckpt").is_file():
            argv.append("--resume")
        stage("3/5 refiner", argv)
        stage("3/5 refiner", ["attach-refiner", str(out), str(ref_dir / "best.safetensors"), "--out", str(out),
                              "--blend", "expected-error", "--overwrite"])
    else:
        print("\n== 3/5 refiner: not asked for (build.refiner)", file=sys.stderr)

    # 4. the network-alone hold
    if section.get("hold") is not None:
        stage("4/5 hold", ["hold", str(section["hold"]), "--weights", str(out), "--out", str(out), "--overwrite",
                           "--chosen-on", f"build config {Path(args.config).name}"])
    else:
        print("\n== 4/5 hold: not asked for (build.hold)", file=sys.stderr)

    # 5. calibration on the held-out part of the run's split
    cal = {"split": "val", "region_clicks": 3, "level": 0.95, **(section.get("calibrate") or {})}
    split_file = _run_split_file(out)
    argv = (["calibrate"] + model + data + ["--split", str(cal["split"]), "--region-clicks", str(cal["region_clicks"]),
                                            "--level", str(cal["level"])] + common
            + (["--split-file", split_file] if split_file else []))
    stage("5/5 calibration", argv)
    print(f"\nbuilt {out}: open it in the viewer (the model list's 'Weights file…', or napari-landmarks demo IMAGE "
          f"--weights {out}), evaluate it (napari-landmarks evaluate --weights {out} --dataset {cfg['dataset']} "
          f"--split val …), or ship it (napari-landmarks weights register)", file=sys.stderr)
    print(str(out))
    return 0


def _run_split_file(weights) -> str | None:
    """The split file the run trained with (its card names it), so calibration uses the run's held-out films."""
    from .model_card import ModelCard
    from .weights import load_weights

    card = ModelCard.from_metadata(load_weights(weights)[1], source=Path(weights).name)
    return (card.training or {}).get("split_file")


def _prior_off(path) -> None:
    """Store the weights file's shape model (if any) with its prior off: a prior that was not asked for is not used."""
    from .model_card import ModelCard
    from .training.export import _rewrite_card
    from .weights import load_weights

    card = ModelCard.from_metadata(load_weights(path)[1], source=Path(path).name)
    if card.shape_prior and card.shape_prior.get("enabled", True):
        card.shape_prior = {**card.shape_prior, "enabled": False}
        _rewrite_card(path, card)
