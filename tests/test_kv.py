from phoenix_gui.model import preset_model_info
from phoenix_gui.planner.kv import kv_bytes_per_layer, kv_cells, pad, swa_cells

MIB = 1 << 20


def test_reference_example_llama8b():
    # 32 layers, 8 KV heads x 128, ctx 8192, f16: 32 MiB per layer, 1 GiB total; q8_0: 17 MiB
    m = preset_model_info("llama-3.1-8b-instruct-q4_k_m")
    f16 = kv_bytes_per_layer(m, 8192, "f16", "f16", True, 512, "llama-server")
    assert f16[0] == 32 * MIB and sum(f16) == 1024 * MIB
    q8 = kv_bytes_per_layer(m, 8192, "q8_0", "q8_0", True, 512, "llama-server")
    assert q8[0] == 17 * MIB


def test_koboldcpp_reserves_128_then_pads():
    assert kv_cells(2048, "koboldcpp") == 2304
    assert kv_cells(4096, "koboldcpp") == 4352
    assert kv_cells(4096, "llama-server") == 4096
    assert kv_cells(4000, "llama-server") == 4096
    assert kv_cells(4096, "koboldcpp-old") == 4352 and kv_cells(4096, "llama.cpp-old") == 4096


def test_quantized_v_needs_flash_attention():
    from phoenix_gui.planner import PlanSettings

    assert PlanSettings(cache_type_k="q8_0", cache_type_v="q8_0", flash_attn=False).kv_types() == ("q8_0", "f16")
    assert PlanSettings(cache_type_k="q4_0", cache_type_v="q4_0").kv_types() == ("q4_0", "q4_0")


def test_sliding_window_cache():
    g = preset_model_info("gemma-3-12b-it-q4_k_m")
    assert swa_cells(8192, 1024, 512) == 1536
    kv = kv_bytes_per_layer(g, 8192, "f16", "f16", True, 512, "llama-server")
    width = 8 * 256 * 2 * 2  # K + V bytes per cell
    assert kv[5] == 8192 * width  # every 6th layer is global
    assert kv[0] == 1536 * width
    assert sum(kv) == (8 * 8192 + 40 * 1536) * width


def test_koboldcpp_sliding_window_cache_follows_the_kv_type_and_has_its_own_reserve():
    # the real koboldcpp 1.115.1 logged, for gemma-3 at context 8192, ubatch 512, --quantkv q8_0:
    # "1664 cells, 40 layers, 1/1 seqs), K (q8_0)" - quantized like the rest, 1536 + 128 cells
    g = preset_model_info("gemma-3-12b-it-q4_k_m")
    kcpp = kv_bytes_per_layer(g, 8192, "q8_0", "q8_0", True, 512, "koboldcpp-1.115")
    lcpp = kv_bytes_per_layer(g, 8192, "q8_0", "q8_0", True, 512, "llama-server")
    width = 8 * 256 * 34 // 32 * 2  # q8_0: 34 bytes per 32 values, K + V
    assert kcpp[0] == 1664 * width and lcpp[0] == 1536 * width
    assert kcpp[5] == 8448 * width  # the global layers: context + 128, padded to 256
    assert kv_bytes_per_layer(g, 8192, "q8_0", "q8_0", True, 512, "koboldcpp") == kcpp  # the current profile
    assert swa_cells(8192, 1024, 512, n_seq=4, reserve=128) == 4736  # logged with --parallelrequests 3
    assert swa_cells(1024, 1024, 512, reserve=128) == 1024  # never more than the whole cache


def test_mla_geometry():
    # DeepSeek-style MLA GGUFs: one KV head, K 576 + V 512 elements per token per layer
    import dataclasses

    m = preset_model_info("tiny-llama-f16")
    m = dataclasses.replace(m, n_head_kv=[1] * m.n_layer, key_length=576, value_length=512, kv_lora_rank=512)
    m.__dict__.pop("_kv_cache", None)
    kv = kv_bytes_per_layer(m, 4096, "f16", "f16", True, 512, "llama-server")
    assert kv[0] == 4096 * (576 + 512) * 2


def test_parallel_slots_share_one_cache_and_widen_the_sliding_window():
    # llama-server -np 4 --kv-unified logged 4608 SWA cells for Gemma-3 at 8192 (1024 x 4 + 512);
    # koboldcpp --parallelrequests 4 asks for one sequence more (n_seq_max = 5)
    from phoenix_gui.planner import PlanSettings, make_plan
    from phoenix_gui.hardware.rig import GIB, Rig, SystemInfo

    assert swa_cells(8192, 1024, 512, n_seq=4) == 4608
    g = preset_model_info("gemma-3-12b-it-q4_k_m")
    width = 8 * 256 * 2 * 2
    kv4 = kv_bytes_per_layer(g, 8192, "f16", "f16", True, 512, "llama-server", n_seq=4)
    assert kv4[0] == 4608 * width and kv4[5] == 8192 * width
    rig = Rig("cpu", [], SystemInfo(64 * GIB, 60 * GIB, 2, 2, 20.0, "table"))
    for backend, n_seq in (("llama-server", 4), ("koboldcpp", 5)):
        one = make_plan(g, rig, PlanSettings(context=8192, backend=backend)).cpu
        four = make_plan(g, rig, PlanSettings(context=8192, backend=backend, parallel=4)).cpu
        assert four.kv_bytes - one.kv_bytes == 40 * (pad(1024 * n_seq + 512) - 1536) * width
        assert four.compute_bytes - one.compute_bytes == (n_seq - 1) * g.n_vocab * 4  # one logits row per sequence
    dense = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    assert (make_plan(dense, rig, PlanSettings(parallel=8)).cpu.kv_bytes
            == make_plan(dense, rig, PlanSettings()).cpu.kv_bytes)  # no sliding window: the same cells
