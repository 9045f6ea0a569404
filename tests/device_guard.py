"""A CPU-only check for device mix-ups: every tensor that the package's own code creates with a factory
(``torch.arange``, ``zeros``, ``tensor``, …) must name its device. On a CPU-only machine a missing device goes
unnoticed (everything is on the CPU); on CUDA it is the crash of ``torch.arange(b)`` indexing a GPU tensor."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import napari_interactive_landmarks

PACKAGE_DIR = str(Path(napari_interactive_landmarks.__file__).resolve().parent)
TORCH_DIR = str(Path(torch.__file__).resolve().parent)
FACTORIES = {torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.tensor, torch.as_tensor,
             torch.linspace, torch.eye, torch.rand, torch.randn, torch.randint, torch.randperm}


class DeviceGuard(TorchFunctionMode):
    """Records (file:line, function) of every factory call without ``device=`` made from the package."""

    def __init__(self):
        super().__init__()
        self.violations: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            data = args[0] if args else None
            inherits = func in (torch.as_tensor, torch.tensor) and isinstance(data, torch.Tensor)
            if not inherits:
                frame = sys._getframe(1)
                while frame is not None and frame.f_code.co_filename.startswith(TORCH_DIR):
                    frame = frame.f_back
                if frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
                    where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
                    self.violations.append(f"{where} torch.{func.__name__} without device=")
        return func(*args, **kwargs)
