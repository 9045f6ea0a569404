"""Interactive anatomical landmark detection on X-rays.

The core (everything outside ``napari_interactive_landmarks.napari``) never imports napari or Qt.
Coordinates are (row, col) in original-image pixels everywhere outside ``models`` and ``codecs``.
"""

__version__ = "0.1.0"
