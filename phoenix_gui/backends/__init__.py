"""Backends: koboldcpp and llama-server command lines, configs and (later) processes."""

from .commandline import (LaunchCommand, bat_script, kcpps_config, koboldcpp_command, launch_command,
                          llama_server_command, sh_script, write_kcpps, write_launcher)

__all__ = ["LaunchCommand", "bat_script", "kcpps_config", "koboldcpp_command", "launch_command",
           "llama_server_command", "sh_script", "write_kcpps", "write_launcher"]
