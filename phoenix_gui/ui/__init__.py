"""The Qt wizard. Only this package imports PySide6."""
