import errno
import json
import os
import subprocess
import sys
import tempfile

import pytest
import torch
from PIL import Image

from protoviz_core.infra.atomic import atomic_write, remove_leftovers, save_atomic, save_image


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


def _killed_write(folder, name: str) -> str:
    """What a process killed inside atomic_write leaves: a temporary file of atomic_write's naming."""
    script = (
        "import os, sys\n"
        "from protoviz_core.infra.atomic import atomic_write\n"
        "with atomic_write(sys.argv[1], 'wb') as f:\n"
        "    f.write(b'half a shard'); f.flush()\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(folder / name)], check=False, timeout=60)
    (leftover,) = [p for p in os.listdir(folder) if p.startswith(f".{name}.")]
    return leftover


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "sub").mkdir()
    first = _killed_write(tmp_path, "shard.pt")
    nested = _killed_write(tmp_path / "sub", "other.pt")
    kept = [".gitignore", ".shard.pt.notours.tmp", "shard.pt.tmp"]  # not atomic_write's naming
    for name in kept:
        (tmp_path / name).write_text("x")
    save_atomic({"x": torch.ones(1)}, tmp_path / "shard.pt")  # the next write of that file cleans up
    assert first not in os.listdir(tmp_path) and nested in os.listdir(tmp_path / "sub")
    assert remove_leftovers(tmp_path) == [tmp_path / "sub" / nested]
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, "shard.pt", "sub"])
    assert os.listdir(tmp_path / "sub") == []


@pytest.mark.parametrize("refusal", [errno.ENOSPC, errno.EPERM, errno.EACCES, errno.EROFS])
def test_a_refused_write_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, refusal):
    """A full disk (refused at the flush) or an unwritable folder (refused at the temporary file)."""
    from protoviz_core.infra.atomic import OutputError
    from protoviz_core.infra.errors import ProtovizError

    (tmp_path / "m.json").write_text('{"a": 1}')
    where = "fsync" if refusal == errno.ENOSPC else "mkstemp"

    def refuse(*args, **kwargs):
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os if where == "fsync" else tempfile, where, refuse)
    with pytest.raises(
        OutputError, match=r"m.json: cannot write it \(.+\); make .* writable or free space"
    ) as caught:
        with atomic_write(tmp_path / "m.json") as f:
            f.write('{"a": 2}')
    assert isinstance(caught.value, ProtovizError) and "\n" not in str(caught.value)
    assert (tmp_path / "m.json").read_text() == '{"a": 1}' and os.listdir(tmp_path) == ["m.json"]


def test_other_errors_inside_a_write_are_not_disguised(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "m.json"):
            open(tmp_path / "absent")
    with pytest.raises(PermissionError):  # refused to read another file: not a refusal of the output
        with atomic_write(tmp_path / "m.json"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/elsewhere/viewer.html")


@pytest.fixture
def small_disk(tmp_path):
    """(folder, full): a 64 KiB tmpfs where mounting is allowed (root with CAP_SYS_ADMIN), and
    ``full()`` a no-op; elsewhere a plain folder, and ``full()`` a context in which writes end
    as on a full disk (ENOSPC when the data is flushed)."""
    import contextlib

    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
            ).returncode
            == 0
        )
    except OSError:  # no mount command
        mounted = False
    if mounted:
        yield folder, contextlib.nullcontext
        subprocess.run(["umount", str(folder)], check=True)
        return

    @contextlib.contextmanager
    def full():
        def refuse(descriptor):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "fsync", refuse)
            yield

    yield folder, full


def test_a_full_disk_is_one_line_for_tensors_and_images(small_disk):
    from protoviz_core.infra.atomic import OutputError

    folder, full = small_disk
    save_atomic({"x": torch.zeros(2)}, folder / "small.pt")
    before = (folder / "small.pt").read_bytes()
    with (
        full(),
        pytest.raises(OutputError, match=r"small.pt: cannot write it \(no space left on the device\)"),
    ):
        save_atomic({"x": torch.rand(100_000)}, folder / "small.pt")  # 400 KB into 64 KiB
    assert (folder / "small.pt").read_bytes() == before and os.listdir(folder) == ["small.pt"]
    with full(), pytest.raises(OutputError, match="big.png: cannot write it"):
        save_image(Image.effect_noise((400, 400), 64).convert("RGB"), folder / "big.png")
