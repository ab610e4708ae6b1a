"""koboldcpp's builds as the planner sees them (the rules are explained in engines/profile.py)."""

from __future__ import annotations

from dataclasses import replace

from ..profile import EngineProfile

KOBOLDCPP_1115 = EngineProfile(
    name="koboldcpp-1.115", backend="koboldcpp",
    description="koboldcpp 1.115.1 (June 2026), bundling a 2026 llama.cpp",
    output_layer_first=True,
    context_reserve=128,  # `n_ctx = contextsize + 128` in 1.115.1 (koboldcpp.md §7.1)
    context_pad=256,
    # its logged SWA cache follows --quantkv (gemma-3 q8_0: "1664 cells, 40 layers ... K (q8_0)"), so
    # whatever PR #21277 changed upstream, 1.115.1's llama.cpp quantizes it
    swa_kv_f16=False,
    # its llama.cpp reserves the prompt graph with n_outputs = min(n_ubatch, n_outputs_max), and
    # n_outputs_max defaults to n_batch because koboldcpp never sets it (src/llama-context.cpp:
    # lines 212, 617, 3460 of the 1.115.1 tree): the full n_vocab x n_ubatch logits
    logits_full_ubatch=True,
    # 2, not upstream's 4: ggml-backend.cpp of the 1.115.1 tree defines GGML_SCHED_MAX_COPIES 2 ("kcpp can
    # reduce this ... to make buffer sizes smaller on multigpu"); it doubles the logical batch instead
    pipeline_copies=2,
    mmap_default=False,  # --usemmap is opt-in since ~1.100 (koboldcpp.md §2.3)
    default_split="free",
    op_offload_min_batch=32,
    process_ram_mib=600,
    quant_v_without_fa="k_only",  # "Without FA only K is quantised (warning)"
    default_threads="half_minus_one",
    extra_batching_seqs=1,  # --parallelrequests N > 1 -> n_seq_max = N + 1, kv_unified always
    swa_reserve=128,  # logged: 1664 SWA cells for gemma-3 at 8192 / ubatch 512 (1536 + 128)
    cpu_repack="without_mmap",  # logged: CPU_REPACK without mmap only (tests/test_koboldcpp_real.py)
    split_needs_gpu_library=True,
    rpc_host_cpu_threads=4,
)

KOBOLDCPP_OLD = replace(
    KOBOLDCPP_1115, name="koboldcpp-old",
    description="koboldcpp on a llama.cpp from before mid-December 2025 (1.102 and older)",
    output_layer_first=False,
    # not re-measured: older builds reserved 80 or 120 cells; 128 over-estimates by < 1 %
    context_reserve=128,
)
