"""llama.cpp's rpc-server, the RPC host for llama-server users (server.py); ENGINE is what the registry
(engines/__init__.py) lists. It runs no model, so it has no EngineProfile."""

from .server import RpcServer

ENGINE = RpcServer()
