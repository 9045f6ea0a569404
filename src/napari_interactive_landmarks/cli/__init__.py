"""``napari-landmarks``: demo, predict, build, train, pack, evaluate, calibrate, bench, weights.

Everything except ``demo`` is headless (no napari / Qt import). One module per group of commands: ``using``
(predict, demo), ``building`` (build, train, refiners, shape model, hold, ensemble, weights), ``measuring`` (evaluate,
calibrate, bench); ``common`` what they share."""

from __future__ import annotations

import argparse
import logging
import sys

from . import building, measuring, using
from .common import (CLIError, _add_dataset_args, _add_model_args, _dataset_samples, _load_predictor,  # noqa: F401
                     _negative_corrections, _parse_click, _set_threads)
from .measuring import CobbCollector  # noqa: F401

DESCRIPTION = ("Interactive anatomical landmark detection on X-rays: demo, predict, study, build, train, pack, evaluate, "
               "calibrate, bench, weights. Everything except demo is headless (no napari / Qt).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-landmarks", description=DESCRIPTION)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    using.add_parsers(sub)
    building.add_parsers(sub)
    measuring.add_parsers(sub)
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


if __name__ == "__main__":
    sys.exit(main())
