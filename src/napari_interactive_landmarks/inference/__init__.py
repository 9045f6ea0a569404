"""Headless inference: :class:`Predictor` (weights → coordinates) and device choice."""

from .device import choose_device
from .predictor import Prediction, PredictionError, PreparedImage, Predictor

__all__ = ["Predictor", "Prediction", "PredictionError", "PreparedImage", "choose_device"]
