from hypothesis import given
from hypothesis import strategies as st

from phoenix_gui.planner.placement import CPU, layer_counts, normalise_split, offload_range, plan_layers


def test_two_equal_weights_49_layers_split_25_24():
    a = plan_layers(48, 49, [1, 1])
    assert layer_counts(a, 2) == [25, 24]
    assert a[48] == 1  # output layer on the last device


def test_new_semantics_output_first():
    # ngl = 1 offloads only the output layer; ngl = n_layer leaves block 0 on the CPU
    a = plan_layers(32, 1, [1])
    assert a[32] == 0 and all(d == CPU for d in a[:32])
    a = plan_layers(32, 32, [1])
    assert a[0] == CPU and all(d == 0 for d in a[1:])


def test_old_semantics_blocks_first():
    a = plan_layers(32, 32, [1], output_layer_first=False)
    assert all(d == 0 for d in a[:32]) and a[32] == CPU
    a = plan_layers(32, 33, [1], output_layer_first=False)
    assert all(d == 0 for d in a)


def test_full_offload_same_in_both_eras():
    for split in ([1, 2, 3], [4, 8, 6], [0.3, 0, 2]):
        assert plan_layers(64, 65, split) == plan_layers(64, 65, split, output_layer_first=False)


def test_seed_configuration_layers():
    a = plan_layers(64, 40, [1.5, 4.5, 3])
    assert layer_counts(a, 3) == [7, 20, 13]
    assert a.index(0) == 25 and a[64] == 2


def test_output_on_last_device_with_a_share():
    a = plan_layers(10, 11, [1, 1, 0])
    assert a[10] == 1 and layer_counts(a, 3)[2] == 0


def test_all_zero_split_is_even():
    assert normalise_split([0, 0], 2) == [0.5, 1.0]


def test_zero_devices_or_zero_layers():
    assert offload_range(32, 10, 0) == (23, 0)
    assert plan_layers(32, 0, [1, 1]) == [CPU] * 33


@given(st.integers(1, 120), st.lists(st.integers(0, 40), min_size=1, max_size=8))
def test_exact_counts_trick(n_layer, counts):
    """Integer layer counts that sum to the offloaded layers are reproduced exactly."""
    total = sum(counts)
    if total == 0 or total > n_layer + 1:
        return
    a = plan_layers(n_layer, total, [float(c) for c in counts])
    assert layer_counts(a, len(counts)) == counts


@given(st.integers(1, 100), st.integers(0, 120), st.lists(st.floats(0, 10), min_size=1, max_size=8))
def test_contiguous_tail_in_device_order(n_layer, ngl, split):
    a = plan_layers(n_layer, ngl, split)
    gpu = [d for d in a if d != CPU]
    assert gpu == sorted(gpu)  # contiguous blocks in device order
    if gpu:
        first = a.index(gpu[0])
        assert all(d != CPU for d in a[first:])  # the model's tail is on the GPUs
    assert len(gpu) == min(max(ngl, 0), n_layer + 1)
