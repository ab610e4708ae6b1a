"""Backends: running a plan's engine (command lines, configs, launch, share, tune) on this PC and others."""

from .commandline import bat_script, launch_command, request_for, sh_script, write_kcpps, write_launcher

__all__ = ["bat_script", "launch_command", "request_for", "sh_script", "write_kcpps", "write_launcher"]
