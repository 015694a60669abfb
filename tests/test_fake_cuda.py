"""The fake CUDA device of the suite (tests/fake_cuda.py) catches what a real GPU would refuse."""

import pytest
import torch
from torch import nn

from tests.fake_cuda import fake_cuda


def test_tensors_and_modules_moved_to_the_device_say_so_and_results_follow():
    model = nn.Linear(3, 2)
    host = torch.ones(4, 3)
    with fake_cuda():
        assert torch.cuda.is_available() and torch.cuda.device_count() == 1
        model.to("cuda")
        on_device = host.to("cuda")
        assert on_device.device == torch.device("cuda", 0) and on_device.is_cuda
        assert host.device.type == "cpu"  # moving copies: the host tensor stays where it was
        assert on_device.to("cuda") is on_device and host.to("cpu") is host  # no move: the tensor itself
        assert model.weight.device.type == "cuda" and model.bias.is_cuda
        output = model(on_device)
        assert output.is_cuda and (output * 2).sum().is_cuda
        assert torch.zeros(2, device=output.device).is_cuda  # factories on a tensor's device
        assert output.cpu().device.type == "cpu" and output.to("cpu").device.type == "cpu"
        output.sum().backward()
        assert model.weight.grad.is_cuda  # gradients live with their tensors


def test_mixing_devices_fails_as_cuda_does():
    with fake_cuda():
        on_device, host = torch.arange(4).to("cuda"), torch.arange(4)
        with pytest.raises(RuntimeError, match="same device"):
            on_device + host
        with pytest.raises(RuntimeError, match="same device"):
            torch.cat([on_device, host])
        with pytest.raises(RuntimeError, match="indices should be either on cpu or on the same device"):
            host[on_device[:2]]
        with pytest.raises(TypeError, match="numpy"):
            on_device.numpy()


def test_what_cuda_allows_across_devices_passes():
    with fake_cuda():
        on_device, host = torch.arange(4.0).to("cuda"), torch.arange(4.0)
        assert (on_device * torch.tensor(2.0)).is_cuda  # a 0-dim host tensor is a scalar
        assert on_device[torch.tensor([0, 2])].tolist() == [0.0, 2.0]  # host indices into a device tensor
        host.copy_(on_device)  # copies cross devices
        on_device[torch.tensor([1])] = on_device[:1].clone()
        assert on_device.tolist() == [0.0, 0.0, 2.0, 3.0]


def test_autocast_on_the_device_computes_in_bfloat16():
    weight, inputs = torch.randn(8, 8), torch.randn(4, 8)
    with fake_cuda():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            product = inputs.to("cuda") @ weight.to("cuda")
    assert product.dtype == torch.bfloat16


def test_memory_queries_answer_from_the_fake_and_non_blocking_copies_from_pageable_memory_are_seen():
    with fake_cuda(free_bytes=1000) as gpu:
        assert torch.cuda.mem_get_info()[0] == 1000
        torch.cuda.reset_peak_memory_stats()
        torch.zeros(10).to("cuda")
        assert torch.cuda.max_memory_allocated() >= 40
        torch.zeros(3, 5).to("cuda", non_blocking=True)
        torch.zeros(2).pin_memory().to("cuda", non_blocking=True)
        assert gpu.blocking_copies == [(3, 5)]
    assert not torch.cuda.is_available()  # all undone
