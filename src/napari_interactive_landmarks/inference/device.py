"""Device choice: cuda → mps → cpu, or what the user asks for, with a clear message when it is absent."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    pass


def available_devices() -> list[str]:
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def choose_device(requested: str | None = None) -> torch.device:
    avail = available_devices()
    if requested in (None, "", "auto"):
        return torch.device(avail[0])
    kind = str(requested).split(":")[0]
    if kind not in ("cuda", "mps", "cpu"):
        raise DeviceError(f"unknown device '{requested}'; use auto, cuda, mps or cpu")
    if kind not in avail:
        raise DeviceError(f"device '{requested}' was requested but is not available here (available: {', '.join(avail)})")
    return torch.device(requested)
