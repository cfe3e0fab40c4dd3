"""selfsup.nn.runtime.Runtime: the device, precision and memory format as one object."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from selfsup.nn.runtime import Runtime


def test_precision_is_validated():
    with pytest.raises(ValueError, match="fp32 or bf16"):
        Runtime("cpu", "fp16")


def test_a_device_string_is_normalised():
    rt = Runtime("cpu")
    assert rt.device == torch.device("cpu") and isinstance(rt.device, torch.device)
    assert (rt.precision, rt.channels_last) == ("fp32", False)
    assert Runtime.coerce("cpu") == rt and Runtime.coerce(rt) is rt


def test_of_reads_a_config_section():
    section = SimpleNamespace(device="cpu", precision="bf16", channels_last=True)
    assert Runtime.of(section) == Runtime("cpu", "bf16", True)
    assert Runtime.of(SimpleNamespace(precision="fp32", channels_last=False), torch.device("cpu")) == Runtime("cpu")


def test_inputs_and_module_take_channels_last_when_set():
    x = torch.randn(2, 3, 5, 5)
    y = Runtime("cpu", channels_last=True).inputs(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, x)
    assert Runtime("cpu").inputs(x).is_contiguous()
    assert Runtime("cpu", channels_last=True).inputs(torch.randn(2, 3)).shape == (2, 3)  # not 4-d: as it is
    conv = Runtime("cpu", channels_last=True).module(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_autocast_gives_bf16_matmuls_only_when_bf16():
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with Runtime("cpu", "bf16").autocast():
        assert (a @ b).dtype == torch.bfloat16
    with Runtime("cpu").autocast():
        assert (a @ b).dtype == torch.float32


def test_dict_round_trip():
    rt = Runtime("cpu", "bf16", channels_last=True)
    d = rt.as_dict()
    assert d == {"device": "cpu", "precision": "bf16", "channels_last": True}
    assert Runtime.from_dict(d) == rt
