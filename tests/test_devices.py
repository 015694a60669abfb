import subprocess
import sys

import pytest
import torch

from protoviz_core.devices import DeviceError, claim_slot, resolve_device

HOLDER = """
import sys, time
from protoviz_core.devices import claim_slot
slot, handle = claim_slot(sys.argv[1], int(sys.argv[2]))
print(slot, flush=True)
time.sleep(60)
"""


def _holder(lock_dir, count):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(count)], stdout=subprocess.PIPE,
                               text=True)
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

    library = Path(__file__).resolve().parents[1] / "protoviz_core"
    claiming = [p.name for p in library.glob("*.py") if p.name != "devices.py" and "resolve_device" in p.read_text()]
    assert claiming == []
