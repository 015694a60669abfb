import subprocess
import sys

import pytest
import torch

from protoviz_core.infra.devices import DeviceError, claim_slot, resolve_device

HOLDER = """
import sys, time
from protoviz_core.infra.devices import claim_slot
slot, handle = claim_slot(sys.argv[1], int(sys.argv[2]))
print(slot, flush=True)
time.sleep(60)
"""


def _holder(lock_dir, count):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), str(count)], stdout=subprocess.PIPE, text=True
    )
    return process, int(process.stdout.readline())


def test_parallel_processes_claim_different_gpus(tmp_path):
    first, first_slot = _holder(tmp_path, 2)
    try:
        slot, handle = claim_slot(tmp_path, 2)  # this process comes second
        assert (first_slot, slot) == (0, 1)
    finally:
        first.kill()
        first.wait()
    second, second_slot = _holder(tmp_path, 2)  # the first one's GPU is free again
    second.kill()
    second.wait()
    handle.close()
    assert second_slot == 0


def test_cpu_machine_resolves_auto_to_cpu_and_refuses_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda")


def test_only_stages_claim_devices():
    """The library takes a resolved device; only stage processes claim GPUs (resolve_device)."""
    from pathlib import Path

    library = Path(__file__).resolve().parents[2] / "protoviz_core"
    modules = list(library.rglob("*.py"))
    claiming = [p.name for p in modules if p.name != "devices.py" and "resolve_device" in p.read_text()]
    assert len(modules) > 40 and claiming == []


def _one_gpu(monkeypatch, tmp_path):
    """This process sees one (unused) GPU and claims it under ``tmp_path``."""
    import protoviz_core.infra.devices as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(devices, "_CLAIMED", [])
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))


def test_with_one_gpu_a_second_stage_process_waits_for_it(monkeypatch, tmp_path):
    """`dvc queue start -j 2` on one GPU: the second stage waits rather than share its memory."""
    import threading

    from protoviz_core.infra.devices import gpu_lock_dir

    _one_gpu(monkeypatch, tmp_path)
    holder, slot = _holder(gpu_lock_dir(), 1)  # another stage process holds the GPU
    resolved = []
    waiting = threading.Thread(target=lambda: resolved.append(resolve_device("auto")), daemon=True)
    try:
        waiting.start()
        waiting.join(timeout=2)
        assert slot == 0 and resolved == []  # still waiting
    finally:
        holder.kill()
        holder.wait()
    waiting.join(timeout=20)
    assert resolved == [torch.device("cuda", 0)]


def test_a_gpu_named_by_index_is_checked_against_the_machine(monkeypatch, tmp_path):
    _one_gpu(monkeypatch, tmp_path)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"'cuda:1' but this machine has cuda:0 to cuda:0"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="'cuda:0' but no CUDA device is available"):
        resolve_device("cuda:0")
