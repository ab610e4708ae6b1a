"""Which RPC protocol this PC's engine speaks, and whether another PC's RPC server speaks one it accepts.

Its own room because the answer may need the share host: a koboldcpp binary is started briefly in RPC host
mode and asked. nodes.py (the network side) and share.py (the host) stay below it: launch -> protocols ->
share -> nodes, never back.
"""

from __future__ import annotations

from pathlib import Path

from ..engines import engine_for_exe
from ..hardware.rig import RemoteNode
from .nodes import NodeError
from .rpcwire import Version
from .share import ShareError, ShareHost

_engine_versions: dict[tuple, Version | None] = {}


def engine_protocol(engine_exe: str | Path) -> Version | None:
    """The RPC protocol the engine at engine_exe speaks, or None when Phoenix cannot tell. A koboldcpp.py
    source tree says it in ggml/include/ggml-rpc.h; any other engine that can host RPC is started briefly
    in host mode on a free loopback port and asked (its version is compiled in). Cached per file and mtime."""
    path = Path(engine_exe)
    try:
        st = path.stat()
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _engine_versions:
        declared = engine_for_exe(path).source_protocol(path)
        _engine_versions[key] = Version(*declared) if declared else _asked_version(path)
    return _engine_versions[key]


def _asked_version(path: Path) -> Version | None:
    if not engine_for_exe(path).rpc_host:
        return None  # llama-server has no host mode; its rpc-server is a separate program
    host = ShareHost(path, port=None, info=False, cpu_only=True)
    try:
        host.start(timeout=60.0)
        return host.version
    except ShareError:
        return None
    finally:
        host.stop()


def check_version(node: RemoteNode, engine_exe: str | Path) -> str | None:
    """Before loading: raise NodeError when this PC's engine and the node's RPC server disagree (the engine
    would abort on its first hello). Returns a note when the engine's version cannot be told, else None."""
    mine = engine_protocol(engine_exe)
    if mine is None:
        return (f"Phoenix cannot tell which RPC protocol {Path(engine_exe).name} speaks; {node.label} speaks "
                f"{node.protocol}, and the engine will refuse it at load time if they differ.")
    try:
        theirs = Version.parse(node.protocol)
    except (TypeError, ValueError):
        raise NodeError(f"{node.label} reported no usable RPC protocol version.") from None
    if not theirs.serves(mine):
        newer = "newer" if theirs > mine else "older"
        raise NodeError(f"{node.label} runs RPC protocol {theirs}, {newer} than the {mine} of "
                        f"{Path(engine_exe).name} on this PC, so the engine would refuse it: run the same "
                        "koboldcpp or llama.cpp version on both PCs.")
    return None
