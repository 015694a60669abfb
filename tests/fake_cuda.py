"""A CUDA device simulated on the CPU, so that the suite runs every ``device.type == "cuda"`` branch.

No GPU has to be present. Inside :func:`fake_cuda`:

- ``torch.cuda`` reports one device (``is_available``, ``device_count``, ``set_device``,
  ``synchronize``, ``get_device_name``, the random state ``fork_rng`` saves), and its
  memory queries (``mem_get_info``, ``memory_allocated``, ``memory_reserved``,
  ``max_memory_allocated``, ``reset_peak_memory_stats``) answer from a
  :class:`FakeMemory` whose free bytes the test chooses; ``torch.accelerator`` agrees,
  so DataLoaders pin their batches.
- ``torch.autocast("cuda", dtype=torch.bfloat16)`` is CPU autocast in bfloat16: the same
  reduced-precision arithmetic a GPU's autocast uses for convolutions and matmuls.
- Every tensor, module and factory call that names a CUDA device computes on the CPU,
  and the tensor it makes is *tagged* as living on the device: ``tensor.device`` says
  ``cuda:0`` and ``is_cuda`` is True, and every operation's result inherits the tag.
  ``.cpu()`` / ``.to("cpu")`` copy into an untagged tensor, ``.to("cuda")`` into a
  tagged one (a real copy, as a transfer is).
- **The device-consistency check**: an operation that mixes tagged and untagged tensors
  raises what CUDA raises (``Expected all tensors to be on the same device`` /
  ``indices should be either on cpu or on the same device as the indexed tensor``).
  Like CUDA it lets a 0-dim host tensor act as a scalar, lets a device tensor be indexed
  with host indices, and lets ``copy_`` cross devices. Meta tensors and FakeTensorMode
  cannot catch these mistakes; this does.
- Host-to-device copies with ``non_blocking=True`` from memory that is not pinned are
  recorded in :attr:`FakeCuda.blocking_copies` (on a real GPU they silently block).

The stand-in is faithful to placement, precision and control flow, not to speed or to
every CUDA kernel's rounding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

CUDA = torch.device("cuda", 0)
HOST = torch.device("cpu")
NAME = "fake CUDA (CPU)"

_Tensor = torch.Tensor
_PROPERTY_GETTERS = {
    _Tensor.device.__get__: "device",
    _Tensor.is_cuda.__get__: "is_cuda",
    _Tensor.grad.__get__: "grad",
}
# Operations CUDA allows across devices (or that only move or describe tensors).
_CROSS_DEVICE = {
    _Tensor.copy_,
    _Tensor.data.__set__,
    _Tensor.__repr__,
    _Tensor.__format__,
    torch._has_compatible_shallow_copy_type,
    _Tensor.untyped_storage,
    _Tensor.data_ptr,
    _Tensor.element_size,
    _Tensor.numel,
    _Tensor.dim,
    _Tensor.size,
    _Tensor.shape.__get__,
    _Tensor.dtype.__get__,
    _Tensor.is_floating_point,
    _Tensor.requires_grad.__get__,
    _Tensor.grad.__set__,
    _Tensor.__len__,
}


@dataclass
class FakeMemory:
    """The device's memory as ``torch.cuda``'s queries report it.

    ``allocated`` and ``peak`` count the bytes of every tensor made on the device since
    the last :meth:`reset_peak` (nothing is ever freed): an upper bound, so that sizing
    rules read a peak that grows with the work done, as on a GPU.
    """

    free: int = 8 * 2**30
    total: int = 16 * 2**30
    allocated: int = 0
    peak: int = 0
    resets: int = 0

    def add(self, nbytes: int) -> None:
        self.allocated += nbytes
        self.peak = max(self.peak, self.allocated)

    def reset_peak(self) -> None:
        self.resets += 1
        self.peak = self.allocated


@dataclass
class FakeCuda(TorchFunctionMode):
    """The torch function mode behind :func:`fake_cuda` (see the module docstring)."""

    memory: FakeMemory = field(default_factory=FakeMemory)
    # Descriptions of non_blocking copies from pageable memory
    blocking_copies: list = field(default_factory=list)

    def __post_init__(self):
        super().__init__()
        self.on_device = WeakTensorKeyDictionary()  # tensor -> True: lives on the fake device
        self.pinned = WeakTensorKeyDictionary()  # host tensor -> True: in pinned memory
        self.rng_state = torch.zeros(16, dtype=torch.uint8)  # the device generator's (unused) state

    # -- tags ---------------------------------------------------------------------------------
    def is_on_device(self, tensor) -> bool:
        return isinstance(tensor, _Tensor) and tensor in self.on_device

    def _tag(self, result) -> None:
        for tensor in tree_flatten(result)[0]:
            if isinstance(tensor, _Tensor) and tensor not in self.on_device:
                self.on_device[tensor] = True
                self.memory.add(tensor.numel() * tensor.element_size())

    def pin(self, tensor: torch.Tensor) -> torch.Tensor:
        """A pinned copy of a host tensor (what ``Tensor.pin_memory`` returns)."""
        pinned = tensor.clone()
        self.pinned[pinned] = True
        return pinned

    # -- the mode -----------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PROPERTY_GETTERS:
            on_device = self.is_on_device(args[0])
            if _PROPERTY_GETTERS[func] == "device":
                return CUDA if on_device else func(*args)
            if _PROPERTY_GETTERS[func] == "grad":  # made by autograd, unseen here: it lives with its tensor
                gradient = func(*args)
                if on_device and gradient is not None:
                    self._tag(gradient)
                return gradient
            return on_device
        if func == _Tensor.is_pinned:
            return args[0] in self.pinned
        if func == _Tensor.pin_memory:
            return self.pin(args[0])
        if func in (_Tensor.to, _Tensor.cuda, _Tensor.cpu):  # (== comparisons: method wrappers are made anew)
            return self._move(func, args, kwargs)
        if func == _Tensor.numpy and self.is_on_device(args[0]):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                "tensor to host memory first."
            )
        if func == _Tensor.data.__set__:
            result = func(*args, **kwargs)
            if self.is_on_device(args[1]):
                self.on_device[args[0]] = True
            else:
                self.on_device.pop(args[0], None)
            return result
        device = kwargs.get("device")
        if (
            device is not None and torch.device(device).type == "cuda"
        ):  # a factory: torch.zeros(..., device=...)
            result = func(*args, **{**kwargs, "device": HOST})
            self._tag(result)
            return result
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, _Tensor)]
        if func not in _CROSS_DEVICE:
            self._check_placement(func, args, tensors)
        result = func(*args, **kwargs)
        if any(self.is_on_device(t) for t in tensors) and func not in _CROSS_DEVICE:
            self._tag(result)
        return result

    def _check_placement(self, func, args, tensors) -> None:
        name = getattr(func, "__name__", str(func))
        if func in (_Tensor.__getitem__, _Tensor.__setitem__) and not self.is_on_device(args[0]):
            indices = [t for t in tree_flatten(args[1])[0] if isinstance(t, _Tensor)]
            if any(self.is_on_device(t) for t in indices):
                raise RuntimeError(
                    f"{name}: indices should be either on cpu or on the same device as the "
                    f"indexed tensor (cpu) [fake CUDA]"
                )
        if func == _Tensor.__getitem__ and self.is_on_device(args[0]):
            return  # a device tensor may be indexed with host indices
        if func == _Tensor.__setitem__ and self.is_on_device(args[0]):
            tensors = [args[0], *[t for t in tree_flatten(args[2:])[0] if isinstance(t, _Tensor)]]
        # A 0-dim host tensor is a scalar to CUDA; any other mix of places is an error.
        placed = [t for t in tensors if self.is_on_device(t) or (t.dim() > 0 and t.device.type != "meta")]
        places = {self.is_on_device(t) for t in placed}
        if len(places) > 1:
            raise RuntimeError(
                f"{name}: Expected all tensors to be on the same device, but found at least two "
                f"devices, cuda:0 and cpu! [fake CUDA]"
            )

    def _move(self, func, args, kwargs):
        source = args[0]
        target = self._target(func, args, kwargs)
        if target is None:  # a dtype or memory-format change: stays where it is
            result = func(*args, **kwargs)
            if self.is_on_device(source):
                self._tag(result)
            return result
        if (target.type == "cuda") == self.is_on_device(source):  # already there: CUDA returns it (or a cast)
            result = func(
                *tree_map(lambda v: HOST if _names_cuda(v) else v, args),
                **tree_map(lambda v: HOST if _names_cuda(v) else v, kwargs),
            )
            if target.type == "cuda" and result is not source:
                self._tag(result)
            return result
        rest = tree_map(lambda v: HOST if _names_cuda(v) else v, (args[1:], kwargs))
        if func == _Tensor.cuda:
            result = source.clone()
        else:  # crossing devices
            result = _Tensor.to(source, *rest[0], **rest[1])
        if result is source or result.data_ptr() == source.data_ptr():
            result = result.clone()  # crossing devices is always a copy
        if target.type == "cuda":
            if kwargs.get("non_blocking") and not self.is_on_device(source) and source not in self.pinned:
                self.blocking_copies.append(tuple(source.shape))
            self._tag(result)
        return result

    def _target(self, func, args, kwargs) -> torch.device | None:
        """The device a ``to`` / ``cuda`` / ``cpu`` call moves to; None when it names none."""
        if func == _Tensor.cuda:
            return CUDA
        if func == _Tensor.cpu:
            return HOST
        for value in (*args[1:], kwargs.get("device")):
            if isinstance(value, _Tensor):
                return CUDA if self.is_on_device(value) else HOST
            if isinstance(value, (str, torch.device)):
                return CUDA if _names_cuda(value) else HOST
        return None


def _names_cuda(value) -> bool:
    return isinstance(value, (str, torch.device)) and torch.device(value).type == "cuda"


def _autocast(reduced_precision: bool):
    """``torch.autocast`` with ``"cuda"`` mapped to the CPU's autocast (bfloat16), or with
    ``reduced_precision=False`` to an autocast that is entered but stays off."""

    class Autocast(torch.amp.autocast_mode.autocast):
        def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
            if device_type == "cuda":
                device_type, enabled = "cpu", enabled and reduced_precision
            super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    return Autocast


class _Stream:
    """The device's stream, as optimizers ask it whether a CUDA graph is being captured."""

    def is_capturing(self) -> bool:
        return False

    def synchronize(self) -> None:
        pass


@contextlib.contextmanager
def fake_cuda(free_bytes: int = 8 * 2**30, reduced_precision: bool = True):
    """Run the body as if one CUDA device were present (see the module docstring); yields the
    :class:`FakeCuda` mode (its ``memory`` and ``blocking_copies`` can be read and set).

    ``reduced_precision=False`` keeps autocast off: for tests whose subject is not precision,
    as CPU bfloat16 is slow without the instructions a GPU has (DeePSiM's 4096-wide layers).
    """
    mode = FakeCuda(FakeMemory(free=free_bytes))

    def pin_batch(data, device=None):
        return tree_map(lambda v: mode.pin(v) if isinstance(v, _Tensor) else v, data)

    def mem_get_info(device=None):
        return mode.memory.free, mode.memory.total

    cuda_patches = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "set_device": lambda device: None,
        "synchronize": lambda device=None: None,
        "get_device_name": lambda device=None: NAME,
        "mem_get_info": mem_get_info,
        "memory_allocated": lambda device=None: mode.memory.allocated,
        "memory_reserved": lambda device=None: mode.memory.allocated,
        "max_memory_allocated": lambda device=None: mode.memory.peak,
        "reset_peak_memory_stats": lambda device=None: mode.memory.reset_peak(),
        # its random generator, as torch.random.fork_rng saves and restores it
        "get_rng_state": lambda device="cuda": mode.rng_state.clone(),
        "set_rng_state": lambda state, device="cuda": mode.rng_state.copy_(state),
    }
    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(_patcher())
        for name, replacement in cuda_patches.items():
            patch(torch.cuda, name, replacement)
        patch(torch.accelerator, "is_available", lambda: True)
        patch(torch.accelerator, "current_accelerator", lambda check_available=False: torch.device("cuda"))
        patch(torch.accelerator, "current_device_index", lambda: 0)
        patch(torch.accelerator, "set_device_index", lambda index: None)
        patch(torch.accelerator, "current_stream", lambda device=None: _Stream())
        patch(torch.cuda, "is_current_stream_capturing", lambda: False)
        patch(torch.utils.data._utils.pin_memory, "pin_memory", pin_batch)
        patch(torch, "autocast", _autocast(reduced_precision))
        stack.enter_context(mode)
        yield mode


@contextlib.contextmanager
def _patcher():
    saved = []

    def patch(owner, name, value):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    try:
        yield patch
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
