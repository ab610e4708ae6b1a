"""koboldcpp: its profiles (profile.py) and its program and server (server.py); ENGINE is what the registry
(engines/__init__.py) lists."""

from .options import koboldcpp_command
from .server import KoboldCpp

ENGINE = KoboldCpp()
ENGINE.command = koboldcpp_command  # its command line for a LaunchRequest, from its option table
