"""Probe surfaces (see probe_kit.py)."""

SURFACES: dict = {}
