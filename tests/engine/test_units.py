from collections import OrderedDict

import pytest
import torch
from torch import nn

from protoviz_core.engine.units import (
    centre_activation,
    centre_index,
    centre_units,
    centre_window,
    channel_count,
    check_channels,
    find_layer,
    layer_reader,
    unit_position,
    unit_reader,
)
from protoviz_core.models.backbones import build_backbone


class _MustNotRun(nn.Module):
    def forward(self, x):
        raise AssertionError("ran a layer above the target")


def _model():
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, padding=1),
            relu=nn.ReLU(),
            block=nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1)),
            top=_MustNotRun(),
        )
    )


def test_reader_returns_the_layer_output_and_stops_there():
    model = _model()
    images = torch.rand(2, 3, 9, 9)
    with layer_reader(model, "block.0") as read:
        features = read(images)
    expected = model.block(model.relu(model.conv(images)))
    torch.testing.assert_close(features, expected)
    assert not find_layer(model, "block.0")._forward_hooks  # removed on exit


def test_hook_is_removed_after_an_error():
    model = _model()
    with pytest.raises(KeyError):
        with layer_reader(model, "conv"):
            raise KeyError
    assert not model.conv._forward_hooks


def test_unknown_layer_lists_the_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown layer 'layer9'; valid names: conv, relu, block, block\.0, top"
    ):
        find_layer(_model(), "layer9")


@pytest.mark.parametrize("size", [5, 6])
def test_centre_activation_picks_each_images_own_channel_at_the_centre(size):
    features = torch.randn(3, 4, size, size)
    channels = torch.tensor([2, 0, 3])
    naive = torch.stack([features[i, c, (size - 1) // 2, (size - 1) // 2] for i, c in enumerate(channels)])
    assert torch.equal(centre_activation(features, channels), naive)
    flat = torch.randn(3, 4)
    assert torch.equal(centre_activation(flat, channels), flat[[0, 1, 2], [2, 0, 3]])


def test_channel_count_and_checks():
    assert channel_count(_model(), "block.0", 9) == 6
    assert check_channels(None, 6, "x").tolist() == list(range(6))
    with pytest.raises(ValueError, match=r"channel 6 out of range for layer 'x': valid 0..5"):
        check_channels([1, 6], 6, "x")
    with pytest.raises(ValueError, match="duplicate"):
        check_channels([1, 1], 6, "x")


def test_unit_reader_gives_the_value_before_the_final_relu():
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, padding=1),
            block=nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True)),
            top=_MustNotRun(),
        )
    )
    images = torch.rand(2, 3, 9, 9)
    expected_before = model.block[0](model.conv(images))
    with torch.no_grad(), unit_reader(model, "block") as read:
        output, before = read(images)
    torch.testing.assert_close(before, expected_before)  # the in-place ReLU did not overwrite it
    torch.testing.assert_close(output, expected_before.clamp(min=0))
    assert (before < 0).any()
    assert model.block[1].inplace and not model.block[1]._forward_hooks and not model.block._forward_hooks
    with torch.no_grad(), unit_reader(model, "conv") as read:  # no ReLU at the end: the output itself
        output, before = read(images)
    assert before is output


def _at(row: int, column: int) -> tuple[slice, slice]:
    return slice(row, row + 1), slice(column, column + 1)


def test_unit_position_is_the_middle_of_an_odd_map_and_before_the_middle_of_an_even_one():
    backbone = build_backbone().eval()
    assert unit_position(backbone, "layer4", 96) == ((3, 3), _at(1, 1))
    assert unit_position(backbone, "layer4", 48) == ((2, 2), _at(0, 0))  # no middle unit: up and left of it
    assert unit_position(backbone, "layer1", 48) == ((12, 12), _at(5, 5))
    assert unit_position(backbone, "avgpool", 48) == ((1, 1), _at(0, 0))
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    assert unit_position(linear, "1", 8) == ((1, 1), _at(0, 0))  # (B, C) features: one unit per channel
    assert centre_index(5, 4) == (2, 1)


def test_the_centred_unit_of_an_even_side_is_the_mean_of_its_two_middle_positions():
    assert centre_window(5, 5, "centred") == _at(2, 2)  # odd: the middle, as the authors'
    assert centre_window(2, 2, "centred") == (slice(0, 2), slice(0, 2))  # layer4 at 48 px: all four
    assert centre_window(12, 5, "centred") == (slice(5, 7), slice(2, 3))
    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    middle = features[:, :, 1:3, 1:3].mean(dim=(2, 3))  # (2, 3)
    assert torch.equal(centre_units(features, "centred"), middle)
    assert torch.equal(centre_activation(features, torch.tensor([2, 0]), "centred"), middle[[0, 1], [2, 0]])
    assert torch.equal(centre_units(features, "top_left"), features[:, :, 1, 1])
    with pytest.raises(ValueError, match="read_unit must be one of"):
        centre_window(4, 4, "middle")


def test_a_pooling_layer_after_a_relu_reads_the_pool_of_the_pre_activation():
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, padding=1),
            relu=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2),
            flat=nn.Flatten(),
            head=nn.Linear(4 * 8 * 8, 2),
        )
    ).eval()
    images = torch.randn(5, 3, 16, 16)
    with torch.no_grad(), unit_reader(model, "pool") as read:
        output, before = read(images)
    expected = torch.nn.functional.max_pool2d(model.conv(images), 2)  # the pool of the values before the ReLU
    assert torch.equal(before, expected) and torch.equal(output, before.clamp(min=0)) and (before < 0).any()
    assert model.relu.inplace  # restored
    with torch.no_grad(), unit_reader(model, "flat") as read:  # a flatten after the pool: still the same path
        output, before = read(images)
    assert torch.equal(before, expected.flatten(1))
    with torch.no_grad(), unit_reader(model, "head") as read:  # a linear layer: its output is its own value
        output, before = read(images)
    assert before is output


class _Branches(nn.Module):
    """An Inception-style block: each branch ends in ``F.relu`` inside the module's code, then
    a concatenation."""

    def __init__(self):
        super().__init__()
        self.left, self.right = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return torch.cat(
            [
                torch.nn.functional.relu(self.left(x), inplace=True),
                torch.nn.functional.relu(self.right(x), inplace=True),
            ],
            1,
        )


def test_relus_called_as_functions_and_concatenated_are_left_out_too():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(block=_Branches(), pool=nn.MaxPool2d(2))).eval()
    images = torch.randn(4, 3, 8, 8)
    with torch.no_grad(), unit_reader(model, "pool") as read:
        output, before = read(images)
    expected = torch.nn.functional.max_pool2d(
        torch.cat([model.block.left(images), model.block.right(images)], 1), 2
    )
    assert torch.equal(before, expected) and torch.equal(output, before.clamp(min=0)) and (before < 0).any()
