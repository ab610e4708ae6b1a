"""Entry point of the frozen app (PyInstaller)."""

import sys

from phoenix_gui.cli import main

if __name__ == "__main__":
    sys.exit(main())
