"""What the commands share: the error they raise, loading a model, a dataset split, the common arguments."""

from __future__ import annotations

import re


class CLIError(Exception):
    pass


def _load_predictor(args, name: str | None = None):
    """The model of --weights or --model, or the manifest model ``name`` (predict's choice for an image)."""
    from ..inference import Predictor

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


def _set_threads(args):
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(int(args.threads))


def _dataset_samples(args, predictor):
    """--split is a dataset split (aasce: training/test; isbi2015: TrainingData/Test1Data/Test2Data) or
    'train'/'val': that part of the committed split file of the model's training data."""
    from ..data.datasets import load_dataset
    from ..data.splits import apply_split, load_split

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
