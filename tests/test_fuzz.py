"""Mutated and truncated real headers: nothing but ModelFileError may escape, nothing may hang."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phoenix_gui.model import ModelFileError, read_model, write_skeleton

N = int(os.environ.get("PHOENIX_FUZZ_CASES", "300"))


@pytest.fixture(scope="module")
def header(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    p = write_skeleton("tiny-llama-f16", d / "seed.gguf")
    return p.read_bytes()


def _check(tmp_path, data: bytes):
    p = tmp_path / "m.gguf"
    p.write_bytes(data)
    try:
        read_model(p)
    except ModelFileError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=N, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers(tmp_path, header, data):
    b = bytearray(header)
    n = data.draw(st.integers(1, 8))
    for _ in range(n):
        i = data.draw(st.integers(0, min(len(b) - 1, 64 << 10)))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(b))))
    _check(tmp_path, bytes(b[:cut] if cut is not None else b))


@settings(max_examples=N // 3, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=512))
def test_random_bytes_after_magic(tmp_path, blob):
    _check(tmp_path, b"GGUF\x03\x00\x00\x00" + blob)
