"""Benchmark: the prototype atlas at the scale of a full run, against one page of inline images.

Builds a store shaped like a paper run (960 channels of layer1-4 x 2 repeats x 101
epochs = 193,920 prototypes at 96 px; smooth random fields, see store_scale.py),
then, side by side in one run:

- the atlas (``write_run_part`` + ``write_viewer``): JPEG sprite sheets of 64 px
  thumbnails in two layouts, one sheet per (epoch, layer, repeat) for the layer
  overview and one strip per (layer, unit) for scrubbing a unit through training,
  fetched by the viewer when shown;
- the peer: one HTML page holding every thumbnail inline as a base64 PNG.

It reports build time, bytes on disk, what a browser must read before the first
view (page + data + the sheets on screen), and the time headless Chromium takes
until that first view has loaded (the inline page gets --browser-timeout seconds).
Then it scrubs one layer4 unit through every epoch in Chromium (the arrow key, one
epoch at a time, each view loaded before the next key) and sums the files the viewer
asked for, against what the per-epoch layer sheets alone would have cost.

    python -m bench.peers.atlas_scale                     # full scale: ~5.4 GB of shards, minutes
    python -m bench.peers.atlas_scale --epochs 11 --workdir /tmp/atlas-bench
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from bench.common import LAYER_CHANNELS, size_on_disk, smooth_images, timed
from protoviz_core.engine.synthesis import Prototypes
from protoviz_core.measures.masks import MaskSet
from protoviz_core.presentation.atlas import write_run_part, write_viewer
from protoviz_core.presentation.montage import thumbnails
from protoviz_core.prototypes.store import ShardId, build_index, open_prototypes, write_shard

THUMB = 64

# Headless Chromium through Selenium, in a child process (a hung page cannot stall the bench).
DRIVER = """
import json, sys, tempfile, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
profile = tempfile.TemporaryDirectory()  # removed when the script ends
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", f"--user-data-dir={profile.name}"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
"""
CHROMIUM_SCRIPT = (
    DRIVER
    + """
url, condition, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
driver.set_page_load_timeout(timeout)
started = time.perf_counter()
try:
    driver.get(url)
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(condition))
    print(f"{time.perf_counter() - started:.2f}")
except Exception as exc:
    print(f"failed after {time.perf_counter() - started:.0f} s: {type(exc).__name__}")
finally:
    driver.quit()
"""
)
ATLAS_READY = (
    "const t = [...document.querySelectorAll('.tile')];"
    "return t.length > 0 && t.every((e) => e.dataset.state === 'loaded');"
)
SCRUB_SCRIPT = (
    DRIVER
    + """
url, condition, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(condition))
    slider = driver.find_element(By.ID, "epoch")
    styles = "return [...document.querySelectorAll('.maskonly, .tile, .mask')].map((e) => e.style.cssText);"
    shown = driver.execute_script(styles)
    for _ in range(steps):
        slider.send_keys(Keys.ARROW_RIGHT)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(condition))
        shown += driver.execute_script(styles)
    requested = driver.execute_script("return [...window.PROTOVIZ_REQUESTED.keys()];")
    label = driver.find_element(By.ID, "epoch-label").text
    print(json.dumps({"requested": requested, "last_epoch": label, "styles": shown}))
finally:
    driver.quit()
"""
)
INLINE_READY = "return document.readyState === 'complete' && [...document.images].every((i) => i.complete);"


def write_store(store: Path, epochs: int, size: int) -> int:
    generator = torch.Generator().manual_seed(0)
    shards = []
    for epoch in range(epochs):
        for layer, channels in LAYER_CHANNELS.items():
            for repeat in (1, 2):
                shard = ShardId(epoch, layer, repeat)
                write_shard(
                    store,
                    shard,
                    "bench",
                    Prototypes(
                        images=smooth_images(channels, size, generator),
                        activations=torch.rand(channels),
                        latents=torch.zeros(channels, 4),
                        channels=torch.arange(channels),
                        dead=torch.zeros(channels, dtype=torch.bool),
                        redrawn=torch.zeros(channels, dtype=torch.bool),
                        evolution_activations=torch.zeros(channels),
                    ),
                )
                shards.append(shard)
    return len(build_index(store, shards, aug="clrjit", seed=1))


def write_inline_page(store_path: Path, page: Path) -> None:
    """The peer: every thumbnail of the store as an inline PNG in one HTML file."""
    store = open_prototypes(store_path)
    with open(page, "w") as f:
        f.write("<!DOCTYPE html><html><body>\n")
        for shard_name, rows in store.index.groupby("shard", sort=False):
            for row, image in zip(rows.itertuples(), thumbnails(store.images(rows), THUMB)):
                buffer = io.BytesIO()
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
                data = base64.b64encode(buffer.getvalue()).decode("ascii")
                f.write(
                    f'<img title="e{row.epoch} {row.layer} c{row.channel} r{row.repeat}" '
                    f'src="data:image/png;base64,{data}">\n'
                )
        f.write("</body></html>\n")


def browser_seconds(url: str, condition: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHROMIUM_SCRIPT, url, condition, str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 120,
    )
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


def scrub_reads(atlas: Path, unit_url: str, steps: int) -> tuple[list[Path], str]:
    """Scrub a unit from its first epoch through ``steps`` epochs in Chromium.

    Returns:
        The files the viewer fetched (its image requests and every mask it pointed a
        tile at) and the epoch label it ended on.
    """
    result = subprocess.run(
        [sys.executable, "-c", SCRUB_SCRIPT, unit_url, ATLAS_READY, str(steps)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    found = json.loads(result.stdout.strip().splitlines()[-1])
    masks = {m for style in found["styles"] for m in re.findall(r'url\("([^"]+)"\)', style) if "/masks/" in m}
    return sorted({atlas / p for p in [*found["requested"], *masks]}), found["last_epoch"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=101)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--browser-timeout", type=float, default=300)
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = p.parse_args()
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="atlas-bench-"))
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    store = scratch / "store"
    count = write_store(store, args.epochs, args.size)
    print(f"store: {count:,} prototypes, {size_on_disk(store) / 1e9:.2f} GB")

    atlas = scratch / "atlas"
    name = "clrjit-seed1-bench"
    mask = torch.ones(args.size, args.size)
    masks = MaskSet({0: dict.fromkeys(LAYER_CHANNELS, mask)})
    manifest = {}

    def build_atlas():
        manifest.update(
            write_run_part(
                open_prototypes(store),
                masks,
                atlas / "runs" / name,
                name=name,
                thumb_size=THUMB,
                log=lambda _: None,
            )
        )
        write_viewer(atlas, [manifest])

    atlas_seconds = timed(build_atlas)
    inline = scratch / "inline.html"
    inline_seconds = timed(lambda: write_inline_page(store, inline))

    last = manifest["epochs"][-1]
    view = [
        atlas / "runs" / name / manifest["strips"]["layer4-c17"],  # the unit view: one strip and a mask
        atlas / "runs" / name / manifest["masks"][f"e{last:04d}-layer4"],
    ]
    first_view = sum(p.stat().st_size for p in [atlas / "index.html", atlas / "runs.js", *view])
    per_epoch_sheets = sum(
        (atlas / "runs" / name / manifest["sprites"][f"e{e:04d}-layer4-r{r}"]).stat().st_size
        for e in manifest["epochs"]
        for r in manifest["repeats"]
    )
    strip = (atlas / "runs" / name / manifest["strips"]["layer4-c17"]).stat().st_size
    overview = (atlas / "runs" / name / manifest["sprites"][f"e{last:04d}-layer4-r1"]).stat().st_size
    files = sum(1 for p in atlas.rglob("*") if p.is_file())
    atlas_browser = browser_seconds(
        (atlas / "index.html").as_uri() + "#layer=layer4&unit=17", ATLAS_READY, args.browser_timeout
    )
    inline_browser = browser_seconds(inline.as_uri(), INLINE_READY, args.browser_timeout)
    scrub_started = time.perf_counter()
    scrub_files, scrub_end = scrub_reads(
        atlas, (atlas / "index.html").as_uri() + "#layer=layer4&unit=17&epoch=0", len(manifest["epochs"]) - 1
    )
    scrub_seconds = time.perf_counter() - scrub_started
    scrub = sum(p.stat().st_size for p in scrub_files)

    print(f"\n{count:,} prototypes ({args.epochs} epochs), thumbnails {THUMB} px\n")
    print("| | atlas (sprite sheets) | one inline page | ratio |")
    print("|---|---|---|---|")
    print(
        f"| build (s) | {atlas_seconds:.1f} | {inline_seconds:.1f} | {inline_seconds / atlas_seconds:.1f}x |"
    )
    print(
        f"| bytes on disk (MB) | {size_on_disk(atlas) / 1e6:.1f} in {files} files | "
        f"{inline.stat().st_size / 1e6:.1f} in 1 file | {inline.stat().st_size / size_on_disk(atlas):.2f}x |"
    )
    print(
        f"| read before the first view (MB) | {first_view / 1e6:.2f} | {inline.stat().st_size / 1e6:.1f} | "
        f"{inline.stat().st_size / first_view:.0f}x |"
    )
    print(f"| Chromium: open to first view loaded (s) | {atlas_browser} | {inline_browser} | |")
    print(
        f"\nScrubbing one layer4 unit through all {args.epochs} epochs in Chromium (both repeats, epoch 0 "
        f"to {scrub_end}, {scrub_seconds:.0f} s with a load wait per step): the viewer read "
        f"{len(scrub_files)} files, {scrub / 1e6:.2f} MB (the unit's strip {strip / 1e6:.2f} MB, the rest RF "
        f"masks); the per-epoch layer sheets would be {per_epoch_sheets / 1e6:.1f} MB "
        f"({per_epoch_sheets / scrub:.0f}x). The layer overview of one epoch reads one sheet: "
        f"{overview / 1e6:.2f} MB."
    )
    if not args.workdir:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
