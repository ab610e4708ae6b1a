"""Entry point of the frozen app (PyInstaller)."""

import os
import sys

from phoenix_gui.cli import main
from phoenix_gui.ui.desktop_check import PROBE_ENV, probe_main

if __name__ == "__main__":
    # the desktop check runs the frozen app itself as its child (there is no python -m here)
    sys.exit(probe_main() if os.environ.get(PROBE_ENV) else main())
