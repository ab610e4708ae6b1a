"""KV cache geometry and bytes, per layer, following llama.cpp's allocation rules."""

from __future__ import annotations

from ..model.ggml_types import row_bytes, type_by_name
from ..engines import EngineProfile, profile_named

PAD = 256


def pad(n: int, to: int = PAD) -> int:
    return (n + to - 1) // to * to


def kv_cells(context: int, engine: str | EngineProfile) -> int:
    """Cells llama.cpp allocates for one sequence: the engine's reserve (koboldcpp: 128), padded.
    `engine` is a profile, its name, or a backend name (that backend's current profile)."""
    p = profile_named(engine)
    return pad(max(context + p.context_reserve, 1), p.context_pad)


def swa_cells(cells: int, window: int, n_ubatch: int, n_seq: int = 1, reserve: int = 0) -> int:
    """A unified sliding-window cache holds a window per sequence plus one ubatch, padded; then the
    engine's own reserve (EngineProfile.swa_reserve); never more than the full cache."""
    return min(cells, pad(min(cells, window * max(1, n_seq) + n_ubatch)) + reserve)


def layer_kv_bytes(model, il: int, cells: int, type_k: str, type_v: str, flash_attn: bool,
                   n_ubatch: int, swa_f16: bool = True, n_seq: int = 1, swa_reserve: int = 0) -> tuple[int, int]:
    """(K bytes, V bytes) of layer il; 0 for layers without a cache."""
    n_kv = model.n_head_kv[il]
    if n_kv <= 0:
        return 0, 0
    n = cells
    tk, tv = type_by_name(type_k), type_by_name(type_v)
    if model.swa_layers[il]:
        n = swa_cells(cells, model.sliding_window, n_ubatch, n_seq, swa_reserve)
        if swa_f16:
            tk = tv = type_by_name("f16")  # llama.cpp keeps the SWA cache in f16 (since Apr 2026)
    k_width = model.key_length * n_kv
    v_width = model.value_length * n_kv
    if not flash_attn:
        # V is stored transposed; every layer is padded to the widest V
        v_width = model.value_length * max(model.n_head_kv)
    return row_bytes(tk, k_width) * n, row_bytes(tv, v_width) * n


def kv_bytes_per_layer(model, context: int, type_k: str, type_v: str, flash_attn: bool, n_ubatch: int,
                       engine: str | EngineProfile, n_seq: int = 1) -> list[int]:
    """n_seq: the engine's n_seq_max (EngineProfile.n_seq of the parallel slots)."""
    # Memoised on the model: a slider drag replans many times with the same cache settings.
    p = profile_named(engine)
    key = (context, type_k, type_v, flash_attn, n_ubatch, p, n_seq)
    cache = model.__dict__.setdefault("_kv_cache", {})
    hit = cache.get(key)
    if hit is None:
        cells = kv_cells(context, p)
        hit = [sum(layer_kv_bytes(model, il, cells, type_k, type_v, flash_attn, n_ubatch, p.swa_kv_f16, n_seq,
                                  p.swa_reserve))
               for il in range(model.n_layer)]
        if len(cache) > 64:
            cache.clear()
        cache[key] = hit
    return hit
