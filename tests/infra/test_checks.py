import pytest
import torch

from protoviz_core.infra.checks import DegenerateError, require_informative


def test_informative_values_pass():
    require_informative(torch.randn(4, 10), "vectors")
    require_informative(torch.tensor([[0.0, 1.0], [0.0, 1.0 + 1e-7]]), "nearly equal rows still differ")
    require_informative(torch.ones(5, 5), "a mask", items_must_differ=False)


@pytest.mark.parametrize(
    "values, reason",
    [
        (torch.zeros(3, 4), "all values are zero"),
        (torch.tensor([[1.0, float("nan")], [2.0, 3.0]]), "1 of 4 values are NaN or infinite"),
        (torch.tensor([[1.0, float("inf")], [2.0, 3.0]]), "NaN or infinite"),
        (torch.ones(3, 4).half(), "all 3 items are identical"),
        (torch.zeros(0, 4), "empty"),
    ],
)
def test_degenerate_values_are_named(values, reason):
    with pytest.raises(DegenerateError, match=f"^resnet50 embeddings of epoch 2: .*{reason}"):
        require_informative(values, "resnet50 embeddings of epoch 2")


def test_a_single_item_is_not_compared_with_itself():
    require_informative(torch.ones(1, 4), "one prototype")
    with pytest.raises(DegenerateError, match="all values are zero"):
        require_informative(torch.zeros(6, 6), "RF mask", items_must_differ=False)
