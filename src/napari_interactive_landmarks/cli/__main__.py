"""``python -m napari_interactive_landmarks.cli``: the ``napari-landmarks`` command."""

import sys

from . import main

sys.exit(main())
