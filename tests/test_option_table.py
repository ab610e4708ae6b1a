"""The engines' option tables (engines/<engine>/options.py): each koboldcpp row round-trips (.kcpps -> settings ->
.kcpps and argv), every flag a command line emits is a row's, and every koboldcpp flag and key in the table is
one koboldcpp 1.115.1 itself knows (its argparse and config reader, read from the source tarball)."""

from __future__ import annotations

import re
import tarfile
from dataclasses import replace

import pytest

from kcpp_build import TARBALL
from phoenix_gui.engines import PROFILES, profile_named
from phoenix_gui.engines.koboldcpp import options as kcpp
from phoenix_gui.engines.llama_server import options as llama
from phoenix_gui.engines.options import WORDS, to_argv, to_kcpps
from phoenix_gui.engines.request import LaunchRequest
from phoenix_gui.hardware import demo_rig_path, load_rig

GPUS = tuple(load_rig(demo_rig_path()).gpus)  # three GPUs of this PC, CUDA ids 0, 1, 2 in PCI order

BASE = LaunchRequest(exe=None, model_path="/m/base.gguf", rig_gpus=GPUS, plan_gpus=(0, 1, 2), selected=GPUS,
                     gpulayers=65, tensor_split=(1.0, 1.0, 1.0), profile=profile_named("koboldcpp"))

# a .kcpps value for every row that reads and writes one, and how each is written back when not as it was read
SAMPLES = {
    "model": ["/m/a b.gguf"], "model_param": "/m/a b.gguf", "usecuda": ["normal"], "usecpu": True,
    "rpcmode": "disabled", "rpctargets": "", "gpulayers": 20, "tensor_split": [1.0, 2.0, 3.0], "splitmode": "row",
    "device": "CUDA2,CUDA0", "overridetensors": "exps=CPU,output=CUDA1", "moecpu": 3, "lowvram": True,
    "autofit": False, "contextsize": 8192, "batchsize": 256, "quantkv": "q8_0", "noflashattention": True,
    "usemmap": True, "threads": 6, "blasthreads": 4, "highpriority": True, "quiet": True, "usemlock": True,
    "parallelrequests": 3, "host": "0.0.0.0", "port": 5123, "port_param": 5123,
}
# settings a reader fills -> the LaunchRequest field request_for copies them to
_FIELD = {"use_mmap": "mmap"}


def request_from(r) -> LaunchRequest:
    """What request_for would give for the settings read (a plan that keeps them as they are)."""
    kw = {_FIELD.get(k, k): v for k, v in r.settings.items() if k not in ("backend",)}
    if "tensor_split" in kw:
        kw["tensor_split"] = tuple(kw["tensor_split"])
    if r.raw["model"]:
        kw["model_path"] = r.raw["model"]
    if r.raw["gpu_ids"]:
        kw["plan_gpus"] = tuple(r.raw["gpu_ids"])
        kw["selected"] = tuple(GPUS[i] for i in r.raw["gpu_ids"])
        kw.setdefault("tensor_split", (1.0,) * len(r.raw["gpu_ids"]))
    return replace(BASE, **kw)


def _round_trip_rows():
    return [o for o in kcpp.OPTIONS if o.key and o.read and o.write]


def test_every_row_that_reads_and_writes_has_a_sample():
    assert sorted(o.key for o in _round_trip_rows()) == sorted(SAMPLES)


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_a_row_round_trips_through_settings(key):
    row = next(o for o in kcpp.OPTIONS if o.key == key)
    r = kcpp.read_config({key: SAMPLES[key]})
    req = request_from(r)
    assert to_kcpps(kcpp.OPTIONS, req)[key] == SAMPLES[key]
    argv = kcpp.koboldcpp_command(req).argv
    written = row.write(req)
    if row.flag is None or written is None or written is False or (row.kind != "switch" and written in row.omit):
        assert row.flag is None or row.flag not in argv
    else:
        assert row.flag in argv
        if row.kind == "value":
            assert argv[argv.index(row.flag) + 1] == row.text(written)


def test_the_rows_a_config_cannot_round_trip_are_constants_or_retired_keys():
    """Phoenix writes its own choices (no launcher, autofit off, ...) and reads retired keys only for a note."""
    for o in kcpp.OPTIONS:
        if o.key and not o.read:
            assert o.write(BASE) == o.write(replace(BASE, gpulayers=0, context=99999, port=1)), o.key
        if o.key and not o.write:
            assert o.flag is None and o.read, o.key


def test_keys_and_flags_are_each_in_one_row():
    for table in (kcpp.OPTIONS, llama.OPTIONS):
        flags = [o.flag for o in table if o.flag]
        keys = [k for o in table for k in ((o.key,) if o.key else ()) + o.legacy]
        assert len(flags) == len(set(flags)) and len(keys) == len(set(keys))


def _requests():
    """Requests that switch every row on once: CPU only, one GPU, a subset, each engine profile."""
    kept = (("blasthreads", 4), ("highpriority", True), ("quiet", True), ("usemlock", True))
    full = replace(BASE, split_mode="row", overrides=(("exps", "CPU"), ("output", "CUDA1")), moecpu=2, lowvram=True,
                   flash_attn=False, mmap=False, threads=6, parallel=3, engine_options=kept, cache_type_k="q8_0")
    for p in PROFILES.values():
        yield replace(full, profile=p)
        yield replace(BASE, profile=p, mmap=True)
    yield replace(BASE, plan_gpus=(), gpulayers=0)
    yield replace(BASE, plan_gpus=(2,), selected=(GPUS[2],), tensor_split=(1.0,))


@pytest.mark.parametrize("engine", [kcpp.koboldcpp_command, llama.llama_server_command])
def test_every_flag_a_command_line_emits_is_a_rows(engine):
    table = kcpp.OPTIONS if engine is kcpp.koboldcpp_command else llama.OPTIONS
    known = {o.flag for o in table if o.flag}
    known |= {w for o in table if o.kind == WORDS for p in PROFILES.values() for w in p.no_mmap_args}
    seen = set()
    for req in _requests():
        argv = engine(req).argv[1:]
        assert argv == to_argv(table, req)  # the command line is the table's, nothing added beside it
        seen |= {w for w in argv if re.match(r"--?[a-z]", w)}
    assert seen <= known
    assert {o.flag for o in table if o.flag and o.write} <= seen | {"--rpc", "--rpcmode", "--rpctargets"}


def _koboldcpp_source() -> str:
    if not TARBALL.exists():
        pytest.skip(f"the koboldcpp source tarball is not at {TARBALL}")
    with tarfile.open(TARBALL) as t:
        return t.extractfile("koboldcpp-1.115.1/koboldcpp.py").read().decode("utf-8")


def test_every_koboldcpp_flag_and_key_is_one_koboldcpp_knows():
    src = _koboldcpp_source()
    names = set()
    for m in re.finditer(r"add_argument\(((?:\s*[\"'][^\"']+[\"']\s*,)+)", src):
        names |= set(re.findall(r"[\"']([^\"']+)[\"']", m.group(1)))
    flags = {o.flag for o in kcpp.OPTIONS if o.flag}
    assert flags <= names, flags - names
    # a config key is an argument's name (--x or a positional), or a key its config reader handles by name
    for key in {k for o in kcpp.OPTIONS for k in ((o.key,) if o.key else ()) + o.legacy}:
        assert f"--{key}" in names or key in names or f'"{key}"' in src, key
