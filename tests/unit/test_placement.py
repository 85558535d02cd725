"""Where an inference model's weights go (robolora.placement): sizes, caps per device, the device map."""

from __future__ import annotations

import pytest

from robolora.errors import UserError
from robolora.placement import check_fits, device_map, parse_max_memory, parse_size


def _refusal(fn, *args) -> str:
    with pytest.raises(UserError) as e:
        fn(*args)
    return str(e.value)


def test_sizes_in_decimal_and_binary_units():
    assert parse_size("24GB") == 24 * 10**9 and parse_size(" 79.1 GiB ") == int(79.1 * 2**30)
    assert (
        _refusal(parse_size, "20") == "--max-memory: '20' is not a size; write a number and a unit, e.g. 20GiB or 24GB"
    )
    assert _refusal(parse_size, "20 parsecs").startswith("--max-memory: '20 parsecs' is not a size")
    assert _refusal(parse_size, "0GiB") == "--max-memory: '0GiB' is no memory at all; give a positive size"


def test_caps_name_visible_gpus_and_the_host_once_each():
    assert parse_max_memory("cpu:8GiB", gpus=0) == {"cpu": 8 * 2**30}
    assert parse_max_memory(" 0:20GiB , cpu:1TiB,", gpus=1) == {0: 20 * 2**30, "cpu": 2**40}
    assert _refusal(parse_max_memory, "2:20GiB", 2) == (
        "--max-memory: GPU 2 is not visible (GPUs 0..1); name a visible GPU or cpu"
    )
    assert _refusal(parse_max_memory, "disk:1TB", 2) == (
        "--max-memory: 'disk:1TB' names neither a GPU index nor cpu; write e.g. 0:20GiB,cpu:64GiB"
    )
    assert _refusal(parse_max_memory, "0:1GiB,0:2GiB", 2) == "--max-memory: 0 is capped twice; give each device once"
    assert _refusal(parse_max_memory, "20GiB", 0) == (
        "--max-memory 20GiB: no GPU is visible; cap the host instead with cpu:20GiB"
    )


def test_one_device_holds_the_model_unless_several_gpus_or_caps_spread_it():
    assert device_map(0, None) == {"device_map": {"": "cpu"}}
    assert device_map(1, None) == {"device_map": {"": 0}}
    assert device_map(4, None) == {"device_map": "auto"}
    caps = parse_max_memory("40GB", gpus=2)
    assert device_map(2, caps) == {"device_map": "auto", "max_memory": {0: 40 * 10**9, 1: 40 * 10**9}}


def test_caps_too_small_for_the_weights_are_refused_before_loading():
    check_fits(68 * 10**9, parse_max_memory("44GiB", gpus=2))  # 34B in bf16 over two 48 GB cards
    assert _refusal(check_fits, 68 * 10**9, parse_max_memory("0:44GiB", gpus=2)) == (
        "--max-memory: the weights need about 63.3 GiB but the caps allow 44.0 GiB in all; raise them, add "
        "cpu:SIZE, or load with --quantization 4bit"
    )
