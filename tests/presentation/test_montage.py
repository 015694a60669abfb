import numpy as np
import pytest
import torch

from protoviz_core.presentation.montage import grid, thumbnails


def test_grid_places_images_row_by_row_with_gaps():
    images = torch.stack([torch.full((3, 4, 4), 10 * i, dtype=torch.uint8) for i in range(5)])
    picture = np.asarray(grid(images, columns=3, gap=1))
    assert picture.shape == (2 * 4 + 1, 3 * 4 + 2, 3)
    assert picture[0, 0, 0] == 0 and picture[0, 5, 0] == 10 and picture[5, 5, 0] == 40
    assert picture[4, 0, 0] == 255 and picture[8, 13, 0] == 255  # gap and the empty last cell are white
    with pytest.raises(ValueError, match="expected"):
        grid(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


def test_thumbnails_downscale_only():
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    small = thumbnails(images, 8)
    assert small.shape == (3, 3, 8, 8) and small.dtype == torch.uint8
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    assert thumbnails(flat, 8).eq(77).all()  # antialiasing keeps a flat image flat
    assert thumbnails(images, 64) is images
