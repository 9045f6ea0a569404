"""``napari-landmarks``: demo, predict, train, evaluate, bench, weights."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


class CLIError(Exception):
    pass


def _cmd_train(args):
    from .training.trainer import Trainer, load_config

    cfg = load_config(args.config)
    for key in ("root", "device", "out_dir", "num_threads", "epochs", "time_budget_min", "seed"):
        val = getattr(args, key, None)
        if val is not None:
            cfg[key] = val
    if cfg.get("out_dir") in (None, "runs/model"):
        cfg["out_dir"] = str(Path("runs") / cfg["name"])
    trainer = Trainer(cfg)
    print(f"training '{cfg['name']}' on {trainer.device} → {cfg['out_dir']}", file=sys.stderr)
    trainer.load_data()
    result = trainer.fit(resume=args.resume, progress=not args.no_progress)
    print(json.dumps(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-landmarks", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

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
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"napari-landmarks {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
