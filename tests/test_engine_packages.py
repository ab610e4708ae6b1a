"""The engines package: one package per engine, a registry that answers by name and by program, capabilities
instead of name checks, and llama.cpp's rpc-server added as one more package (the RPC host for llama-server
users)."""

import importlib
import pkgutil
import stat
import sys
from pathlib import Path

import pytest

import phoenix_gui.engines as engines
from phoenix_gui.engines import CURRENT, ENGINES, PROFILES, engine_for_exe, engine_for_host, engine_named
from phoenix_gui.engines.base import Engine

FAKE_RPC = Path(__file__).with_name("fake_rpc_server.py")
PACKAGES = [m.name for m in pkgutil.iter_modules(engines.__path__) if m.ispkg]


def test_every_engine_package_is_registered_with_its_server_and_program_names():
    assert sorted(PACKAGES) == ["koboldcpp", "llama_server", "rpc_server"]
    for pkg in PACKAGES:
        engine = importlib.import_module(f"phoenix_gui.engines.{pkg}").ENGINE
        server = importlib.import_module(f"phoenix_gui.engines.{pkg}.server")
        assert isinstance(engine, Engine) and type(engine).__module__ == server.__name__
        assert ENGINES[engine.name] is engine and engine.exe_names
        assert engine.serves_model or engine.rpc_host  # an engine does something Phoenix runs
        if engine.serves_model:  # the planner reads its facts as pure data
            assert CURRENT[engine.name].backend == engine.name and CURRENT[engine.name] in PROFILES.values()
        else:
            assert engine.name not in CURRENT and not any(p.backend == engine.name for p in PROFILES.values())


def test_rpc_server_is_a_host_only_engine():
    rpc = ENGINES["rpc-server"]
    assert rpc.rpc_host and not rpc.serves_model
    assert [e.name for e in ENGINES.values() if e.serves_model] == ["koboldcpp", "llama-server"]
    assert [e.name for e in ENGINES.values() if e.rpc_host] == ["koboldcpp", "rpc-server"]


def test_the_registry_answers_by_name_with_a_copy_of_its_own():
    k = engine_named("koboldcpp")
    assert k.name == "koboldcpp" and k is not ENGINES["koboldcpp"]
    k.is_ready = lambda host, port: True  # a test replacing a method leaves the registry's engine alone
    assert ENGINES["koboldcpp"].is_ready is not k.is_ready
    with pytest.raises(ValueError, match="Unknown engine 'vllm'"):
        engine_named("vllm")


@pytest.mark.parametrize("exe, engine, host", [
    ("/opt/kcpp/koboldcpp_cu12", "koboldcpp", "koboldcpp"),
    ("C:\\AI\\KoboldCpp.exe", "koboldcpp", "koboldcpp"),
    ("/src/koboldcpp/koboldcpp.py", "koboldcpp", "koboldcpp"),
    ("/usr/bin/llama-server", "llama-server", "koboldcpp"),
    ("/old/llama.cpp/server", "llama-server", "koboldcpp"),  # llama.cpp's server before it was renamed
    ("/usr/local/bin/rpc-server", "rpc-server", "rpc-server"),
    ("C:\\llama\\rpc-server.exe", "rpc-server", "rpc-server"),
    ("/opt/share/kcpp", "llama-server", "koboldcpp"),  # no engine's name: shared as koboldcpp, as always
])
def test_the_registry_answers_by_program(exe, engine, host):
    assert engine_for_exe(Path(exe.replace("\\", "/"))).name == engine
    assert engine_for_host(exe.replace("\\", "/")).name == host


def test_rpc_server_host_command_line():
    """Its flags as its usage text gives them (tools/rpc/rpc-server.cpp, print_usage): -H host, -p port,
    -d dev1,dev2, -t threads, -c (local cache)."""
    rpc = ENGINES["rpc-server"]
    assert rpc.host_argv("/usr/bin/rpc-server", "127.0.0.1", 50052, []) == [
        "/usr/bin/rpc-server", "-H", "127.0.0.1", "-p", "50052"]
    assert rpc.host_argv("/usr/bin/rpc-server", "0.0.0.0", 50060, ["CUDA0", "CUDA1"], threads=6, cache=True) == [
        "/usr/bin/rpc-server", "-H", "0.0.0.0", "-p", "50060", "-d", "CUDA0,CUDA1", "-t", "6", "-c"]
    assert rpc.host_argv("rpc-server", "127.0.0.1", 5, [], cpu_only=True)[-2:] == ["-d", "CPU"]
    assert rpc.host_label(None) == "llama.cpp rpc-server" and not rpc.host_label_versioned


def test_koboldcpp_host_command_line():
    k = ENGINES["koboldcpp"]
    assert k.host_argv("/opt/koboldcpp", "127.0.0.1", 50052, ["CUDA1"], cpu_only=True) == [
        "/opt/koboldcpp", "--skiplauncher", "--rpcmode", "host", "--rpchost", "127.0.0.1", "--rpcport", "50052",
        "--rpcdevice", "CUDA1", "--usecpu"]
    assert k.host_label("1.115.1") == "koboldcpp 1.115.1" and k.host_label_versioned


def test_the_device_list_an_rpc_host_prints():
    """ggml-rpc's start-up printout (ggml/src/ggml-rpc/ggml-rpc.cpp, ggml_backend_rpc_start_server, in the
    koboldcpp 1.115.1 tree): printf("Starting RPC server v%d.%d.%d\\n"), the endpoint and cache lines,
    "Devices:", then printf("  %s: %s (%zu MiB, %zu MiB free)\\n", name, description, total, free) per device.
    rpc-server and koboldcpp's host both print it; an earlier start's list (a restart in one log) is skipped."""
    log = ["create_backend: using CUDA backend",
           "Starting RPC server v3.0.0",
           "  CUDA9: stale (1 MiB, 1 MiB free)",
           "Starting RPC server v3.0.0",
           "  endpoint       : 0.0.0.0:50052",
           "  local cache    : n/a",
           "Devices:",
           "  CUDA0: NVIDIA GeForce RTX 3090 (24135 MiB, 23801 MiB free)",
           "  CPU: AMD Ryzen 9 5950X 16-Core Processor (64216 MiB, 64216 MiB free)",
           "  transport      : TCP"]
    for name in ("rpc-server", "koboldcpp"):
        assert ENGINES[name].rpc_devices(log) == [
            {"engine_name": "CUDA0", "description": "NVIDIA GeForce RTX 3090", "total_bytes": 24135 << 20,
             "free_bytes": 23801 << 20},
            {"engine_name": "CPU", "description": "AMD Ryzen 9 5950X 16-Core Processor", "total_bytes": 64216 << 20,
             "free_bytes": 64216 << 20}]


def test_versions_and_source_protocol(tmp_path):
    k = ENGINES["koboldcpp"]
    assert k.parse_version("KoboldCpp 1.115.1\n") == "1.115.1" and k.parse_version("") == "unknown"
    assert k.version_argv("/x/koboldcpp") == ["/x/koboldcpp", "--version"]
    header = tmp_path / "ggml" / "include" / "ggml-rpc.h"
    header.parent.mkdir(parents=True)
    header.write_text("#define RPC_PROTO_MAJOR_VERSION    3\n#define RPC_PROTO_MINOR_VERSION    0\n"
                      "#define RPC_PROTO_PATCH_VERSION    0\n")
    assert k.source_protocol(tmp_path / "koboldcpp.py") == (3, 0, 0)
    assert ENGINES["llama-server"].source_protocol(tmp_path / "koboldcpp.py") is None
    assert k.source_protocol(tmp_path / "elsewhere" / "koboldcpp.py") is None


def test_a_hostile_rpc_header_gives_no_version_and_no_crash(tmp_path):
    """A source tree is a file on disk like any other: non-ASCII digits (int() refuses "²") and a header grown
    past any real one (read no further than 100 KB) mean "cannot tell", never a traceback or a long read."""
    k = ENGINES["koboldcpp"]
    header = tmp_path / "ggml" / "include" / "ggml-rpc.h"
    header.parent.mkdir(parents=True)
    header.write_text("#define RPC_PROTO_MAJOR_VERSION    \u00b2\n#define RPC_PROTO_MINOR_VERSION    0\n"
                      "#define RPC_PROTO_PATCH_VERSION    0\n", encoding="utf-8")
    assert k.source_protocol(tmp_path / "koboldcpp.py") is None
    header.write_text("// padding\n" * 20_000 + "#define RPC_PROTO_MAJOR_VERSION 3\n#define RPC_PROTO_MINOR_VERSION 0\n"
                      "#define RPC_PROTO_PATCH_VERSION 0\n")
    assert k.source_protocol(tmp_path / "koboldcpp.py") is None  # past the first 100 KB: not read


@pytest.mark.skipif(sys.platform == "win32", reason="a /bin/sh stand-in named rpc-server")
def test_share_host_runs_rpc_server_as_the_registry_says(tmp_path):
    """ShareHost picks its engine from the registry: a program named rpc-server gets rpc-server's command line
    (-H, -p, -d), its label, and its device list read from its own printout (tests/fake_rpc_server.py)."""
    from phoenix_gui.backends.share import ShareHost

    exe = tmp_path / "rpc-server"
    seen = tmp_path / "argv"
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {seen}\nexec {sys.executable} {FAKE_RPC} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    with ShareHost(exe, port=None, devices=["CPU"]) as host:
        assert host.engine.name == "rpc-server"
        assert seen.read_text().split() == ["-H", "127.0.0.1", "-p", str(host.port), "-d", "CPU"]
        assert host.info()["engine"] == "llama.cpp rpc-server" and str(host.version) == "4.0.1"
        assert host.engine_devices == [{"engine_name": "CPU", "description": "Fake CPU", "total_bytes": 8192 << 20,
                                        "free_bytes": 6144 << 20}]
