"""Headless inference: :class:`Predictor` (weights → coordinates), :class:`LandmarkSession` (one image's
interactive state) and device choice."""

from ..io.files import SaveError, SaveExistsError
from .device import choose_device
from .predictor import Prediction, PredictionError, PreparedImage, Predictor
from .session import LandmarkSession, PartialFileError, SessionError

__all__ = ["Predictor", "Prediction", "PredictionError", "PreparedImage", "LandmarkSession", "SessionError", "PartialFileError",
           "SaveError", "SaveExistsError", "choose_device"]
