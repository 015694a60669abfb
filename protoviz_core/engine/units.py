"""Units of a network: a channel of a layer, read at the centre of its feature map.

Paper Sec. 2.1: the unit of a convolutional layer is channel c at the spatial
centre, ``act[c, (H-1)//2, (W-1)//2]`` in the authors' code (``read_unit="top_left"``);
``read_unit="centred"`` averages the middle two positions of an even side instead, so
that the unit's receptive field is centred (:func:`centre_window`). The network only runs up to the target
layer: a forward hook captures the layer's output and stops the forward pass, so
no compute is spent on the layers above it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


class _StopForward(Exception):
    """Raised by the capture hook once the target layer has run."""


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer`` (dotted, as in ``model.named_modules()``).

    Raises:
        ValueError: no such module; the message lists the valid names.
    """
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        names = [name for name in modules if name]
        shown = ", ".join(names[:60]) + (f", ... ({len(names)} in all)" if len(names) > 60 else "")
        raise ValueError(f"unknown layer {layer!r}; valid names: {shown}")
    return modules[layer]


@contextmanager
def layers_reader(
    model: nn.Module, layers: Sequence[str]
) -> Iterator[Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    """Context manager giving ``read(images) -> {layer: features}`` for several layers in one pass.

    ``images`` (B, 3, H, W) go through ``model`` only until every one of ``layers`` has
    run; ``features[layer]`` is that layer's output, (B, C, h, w) for a convolution or
    (B, C) for a linear layer, with gradients when ``images`` require them. The hooks
    are removed on exit.
    """
    wanted = list(dict.fromkeys(layers))
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured[name] = output
            if len(captured) == len(wanted):
                raise _StopForward

        return hook

    handles = [find_layer(model, name).register_forward_hook(hook_for(name)) for name in wanted]

    def read(images: torch.Tensor) -> dict[str, torch.Tensor]:
        captured.clear()
        try:
            model(images)
        except _StopForward:
            pass
        missing = [name for name in wanted if name not in captured]
        if missing:
            raise RuntimeError(f"layer {missing[0]!r} did not run in the model's forward pass")
        return {name: captured[name] for name in wanted}

    try:
        yield read
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def layer_reader(model: nn.Module, layer: str) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """:func:`layers_reader` of one layer: ``read(images) -> features`` (B, C, h, w) or (B, C)."""
    with layers_reader(model, [layer]) as read_layers:
        yield lambda images: read_layers(images)[layer]


class _PathRecorder(TorchFunctionMode):
    """Records, during a forward pass, every ReLU-like call and every call that commutes with a ReLU.

    Function calls, not modules: ``nn.ReLU`` calls ``F.relu``, and so does code that uses it
    directly (torchvision's GoogLeNet and Inception blocks). ReLUs run out of place while
    recording: their inputs must survive. ``made`` maps ``id(output)`` to ``(kind, inputs,
    redo)``: kind ``relu`` (inputs: the tensor before it), ``commuting`` (max pooling,
    flatten, dropout; ``redo(x)`` applies the call to another input) or ``cat``.
    """

    def __init__(self):
        super().__init__()
        self.made: dict[int, tuple[str, object, Callable | None, torch.Tensor]] = {}

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None):
        kwargs = dict(kwargs or {})
        if func in _RELUS:
            output = func(args[0])  # out of place, whatever the caller asked
            self.made[id(output)] = ("relu", args[0], None, output)
            return output
        if func is F.hardtanh and _hardtanh_bounds(args, kwargs)[0] == 0:  # ReLU6: hardtanh(x, 0, 6)
            low, high = _hardtanh_bounds(args, kwargs)
            output = func(args[0], low, high)
            self.made[id(output)] = ("relu", args[0], None, output)
            return output
        output = func(*args, **kwargs)
        if (
            func in _COMMUTING
            and isinstance(output, torch.Tensor)
            and args
            and isinstance(args[0], torch.Tensor)
        ):
            rest = args[1:]
            self.made[id(output)] = (
                "commuting",
                args[0],
                lambda x, f=func, a=rest, k=kwargs: f(x, *a, **k),
                output,
            )
        elif func is torch.cat and isinstance(output, torch.Tensor):
            parts = list(args[0] if args else kwargs["tensors"])
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            self.made[id(output)] = ("cat", parts, lambda xs, d=dim: torch.cat(xs, d), output)
        return output

    def before(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """``tensor`` recomputed with the last ReLU on each of its paths left out; None where
        no path has one."""
        record = self.made.get(id(tensor))
        if record is None or record[3] is not tensor:
            return None
        kind, inputs, redo, _ = record
        if kind == "relu":
            return inputs
        if kind == "commuting":
            inner = self.before(inputs)
            return None if inner is None else redo(inner)
        parts = [self.before(part) for part in inputs]
        if all(part is None for part in parts):
            return None
        return redo([part if part is not None else original for part, original in zip(parts, inputs)])


def _hardtanh_bounds(args: tuple, kwargs: dict) -> tuple[float, float]:
    low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
    high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
    return low, high


_RELUS = {F.relu, torch.relu, torch.Tensor.relu, F.relu6}
# Calls that commute with a ReLU: m(relu(x)) = relu(m(x)) (max pooling is monotone; the rest move values).
_COMMUTING = {
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    torch.flatten,
    torch.Tensor.flatten,
    F.dropout,
}


@contextmanager
def unit_reader(
    model: nn.Module, layer: str
) -> Iterator[Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
    """:func:`layer_reader` that also gives ``layer``'s pre-activation: ``read(images) -> (output, before)``.

    ``before`` is the layer's output with the last ReLU (or ReLU6) on its path left out:
    the ReLU's input when the layer ends with one (a ResNet block, a VGG ``features.N``
    ReLU); when the output comes from ReLUs through calls that commute with them (max
    pooling, as in a VGG pooling layer; the concatenation of an Inception block's
    branches), those calls applied to the ReLUs' inputs; else ``output`` itself. Where
    the output is positive the two are equal; where a ReLU has cut a unit to 0,
    ``before`` still says how far it is from switching on and passes a gradient, so an
    optimiser can bring a silent unit alive. While reading, ReLUs run out of place
    (their inputs must survive); results are unchanged.
    """
    with layer_reader(model, layer) as read_output:

        def read(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            recorder = _PathRecorder()
            with recorder:
                output = read_output(images)
            before = recorder.before(output)
            return output, output if before is None else before

        yield read


READ_UNITS = ("centred", "top_left")


def centre_index(height: int, width: int) -> tuple[int, int]:
    """(row, column) of the authors' unit on an (h, w) map: the middle one; where a side is
    even there is no middle, and it is the one before (up and left of the centre)."""
    return (height - 1) // 2, (width - 1) // 2


def centre_window(height: int, width: int, read_unit: str = "top_left") -> tuple[slice, slice]:
    """(rows, columns) of the map positions whose mean is the unit read.

    ``top_left`` (the paper authors' code): the single position :func:`centre_index`.
    ``centred`` (this project's choice for small images): on an odd side the middle
    position, on an even side the two middle ones, so the unit is the mean of the middle
    1, 2 or 4 positions and its receptive field is centred on the image by symmetry. At
    48 px ResNet18's layer4 map is 2 x 2: ``top_left`` reads a corner unit whose gradient
    receptive field peaks in the image's corner; ``centred`` reads the mean of all four.
    """
    if read_unit not in READ_UNITS:
        raise ValueError(f"read_unit must be one of {READ_UNITS}, got {read_unit!r}")
    row, column = centre_index(height, width)
    if read_unit == "top_left":
        return slice(row, row + 1), slice(column, column + 1)
    return slice(row, height // 2 + 1), slice(column, width // 2 + 1)


def unit_position(
    model: nn.Module, layer: str, image_size: int, read_unit: str = "top_left"
) -> tuple[tuple[int, int], tuple[slice, slice]]:
    """``((h, w), (rows, columns))``: the layer's map size for ``image_size`` inputs and the
    positions averaged into the unit read (:func:`centre_window`).

    ``model`` on the CPU, in eval mode (one probe image). A linear layer is ``((1, 1), (0:1, 0:1))``.
    """
    with torch.no_grad(), layer_reader(model, layer) as read:
        features = read(torch.zeros(1, 3, image_size, image_size))
    height, width = features.shape[2:] if features.ndim == 4 else (1, 1)
    return (height, width), centre_window(height, width, read_unit)


def centre_activation(
    features: torch.Tensor, channels: torch.Tensor, read_unit: str = "top_left"
) -> torch.Tensor:
    """Each image's own unit: ``features[i, channels[i]]`` read at :func:`centre_window`.

    Args:
        features: (B, C, h, w) or (B, C).
        channels: int (B,) channel index per image.
        read_unit: ``top_left`` or ``centred`` (:func:`centre_window`).

    Returns:
        (B,) activations.
    """
    rows = torch.arange(features.shape[0], device=features.device)
    if features.ndim == 2:
        return features[rows, channels]
    if features.ndim != 4:
        raise ValueError(f"expected (B, C, h, w) or (B, C) features, got shape {tuple(features.shape)}")
    window_rows, window_columns = centre_window(*features.shape[2:], read_unit)
    own = features[rows, channels]  # (B, h, w)
    return own[:, window_rows, window_columns].mean(dim=(1, 2))


def centre_units(features: torch.Tensor, read_unit: str = "top_left") -> torch.Tensor:
    """Every channel's unit of every image: features (B, C, h, w) or (B, C) -> (B, C), read at
    :func:`centre_window`."""
    if features.ndim == 2:
        return features
    if features.ndim != 4:
        raise ValueError(f"expected (B, C, h, w) or (B, C) features, got shape {tuple(features.shape)}")
    window_rows, window_columns = centre_window(*features.shape[2:], read_unit)
    return features[:, :, window_rows, window_columns].mean(dim=(2, 3))


def channel_count(model: nn.Module, layer: str, image_size: int) -> int:
    """Number of channels of ``layer`` for ``image_size`` inputs (one probe image, made where
    the model's weights are, so that it runs wherever the model has been moved)."""
    weights = next(model.parameters(), None)
    device = weights.device if weights is not None else torch.device("cpu")
    with torch.no_grad(), layer_reader(model, layer) as read:
        return read(torch.zeros(1, 3, image_size, image_size, device=device)).shape[1]


def check_channels(channels: Sequence[int] | torch.Tensor | None, count: int, layer: str) -> torch.Tensor:
    """Validated channel indices as int64 (N,); ``None`` means all ``count`` channels.

    Raises:
        ValueError: an index outside ``0..count-1``, or a duplicate.
    """
    if channels is None:
        return torch.arange(count)
    index = torch.as_tensor(channels, dtype=torch.int64).flatten()
    bad = index[(index < 0) | (index >= count)]
    if len(bad):
        raise ValueError(f"channel {bad[0].item()} out of range for layer {layer!r}: valid 0..{count - 1}")
    if len(index.unique()) != len(index):
        raise ValueError(f"duplicate channels for layer {layer!r}: {index.tolist()}")
    return index


def spaced_channels(count: int, limit: int | None) -> torch.Tensor:
    """``limit`` channel indices spread evenly over ``0..count-1`` (all when None or ``limit >= count``)."""
    if limit is None or limit >= count:
        return torch.arange(count)
    return torch.from_numpy(np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64)))


def oversized_selections(
    model: nn.Module, layers: Sequence[str], limit: int | None, image_size: int, key: str
) -> list[str]:
    """One line per layer with fewer channels than ``limit`` (the params ``key`` that set it):
    :func:`spaced_channels` uses all of that layer's channels, and the user should know."""
    lines = []
    for layer in layers:
        count = channel_count(model, layer, image_size)
        if limit is not None and limit > count:
            lines.append(f"{key}: {limit} is more than the {count} channels of {layer}; using all {count}")
    return lines
