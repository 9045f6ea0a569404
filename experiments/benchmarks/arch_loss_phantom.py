"""Which heatmap loss lets each architecture localise in a short from-scratch run: generated phantoms (64 training /
16 validation at 128 × 64, 12 epochs, same seed and schedule as experiments/benchmarks/fg_weight_ablation.py), tiny presets of
HRNet and of the CHH U-Net, foreground-weighted BCE (fg_weight 40) against the 2-D softmax + NLL. Prints validation
MRE (px) at 0 clicks before and after training.

    python experiments/benchmarks/arch_loss_phantom.py
"""

import tempfile

import torch

from fg_weight_ablation import cached
from napari_interactive_landmarks.data.phantom import phantom_schema_dict
from napari_interactive_landmarks.training.trainer import Trainer

RUNS = [("hrnet-tiny", {"preset": "hrnet-tiny"}, "bce"),
        ("hrnet-tiny", {"preset": "hrnet-tiny"}, "softmax_nll"),
        ("chh-tiny", {"arch": "chh-unet", "preset": "chh-tiny"}, "bce"),
        ("chh-tiny", {"arch": "chh-unet", "preset": "chh-tiny"}, "softmax_nll")]


def main():
    torch.set_num_threads(2)
    tr, va = cached(64, 0), cached(16, 1)
    for label, model, loss in RUNS:
        with tempfile.TemporaryDirectory() as out:
            t = Trainer({"schema": phantom_schema_dict(4), "input_size": [128, 64], "sigma": 3.0, "model": model,
                         "epochs": 12, "batch_size": 8, "lr": 3e-3, "val_every": 100, "heatmap_loss": loss,
                         "morphology": {"pairs": 10, "triplets": 10, "weight": 0.01}, "fg_weight": 40.0,
                         "out_dir": out, "seed": 0, "loss_stride": 2, "device": "cpu"})
            t.load_data(tr, va)
            before = t.validate(clicks=[0])[0]
            t.fit(progress=False)
            print(f"{label:10s} {loss:11s}: validation MRE at 0 clicks {before:.2f} px -> "
                  f"{t.validate(clicks=[0])[0]:.2f} px", flush=True)


if __name__ == "__main__":
    main()
