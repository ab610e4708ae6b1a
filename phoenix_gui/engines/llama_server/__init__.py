"""llama.cpp's llama-server: its profiles (profile.py) and its program and server (server.py); ENGINE is what
the registry (engines/__init__.py) lists."""

from .options import llama_server_command
from .server import LlamaServer

ENGINE = LlamaServer()
ENGINE.command = llama_server_command  # its command line for a LaunchRequest, from its option table
