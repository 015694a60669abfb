import json
import os

import pytest
import torch
from PIL import Image

from protoviz_core.atomic import atomic_write, save_atomic, save_image


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "m.json") as f:
            f.write("{partial")
            raise RuntimeError("killed")
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["m.json"]
    save_atomic({"x": torch.ones(2)}, tmp_path / "t.pt")
    assert torch.load(tmp_path / "t.pt", weights_only=True)["x"].sum() == 2
    assert oct((tmp_path / "t.pt").stat().st_mode & 0o777) != oct(0o600)  # usual permissions, not mkstemp's


def test_images_are_saved_in_the_format_their_name_says(tmp_path):
    picture = Image.new("RGB", (4, 4), (0, 128, 255))
    with Image.open(save_image(picture, tmp_path / "a.jpg", quality=90)) as jpeg:
        assert jpeg.format == "JPEG"
    with Image.open(save_image(picture, tmp_path / "a.png")) as png:
        assert png.format == "PNG" and png.getpixel((0, 0)) == (0, 128, 255)
