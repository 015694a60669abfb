import pytest
import torchvision

from protoviz_core.models.networks import NETWORKS


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_each_network_is_torchvisions_with_its_imagenet_weights_and_input_size(name):
    weights = torchvision.models.get_model_weights(name)[NETWORKS[name].weights]
    assert weights.meta["categories"] is not None and len(weights.meta["categories"]) == 1000
    assert weights.transforms().crop_size == [NETWORKS[name].input_size]
