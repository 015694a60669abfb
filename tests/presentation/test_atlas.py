"""The prototype atlas: sprite sheets, manifests, links, and the viewer in headless Chromium."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from protoviz_core.data.stl10 import SplitWriter
from protoviz_core.engine.synthesis import Prototypes
from protoviz_core.measures.exemplars import ExemplarSet, Pool, best_natural
from protoviz_core.measures.masks import MaskSet
from protoviz_core.presentation.atlas import read_manifest, write_run_part, write_viewer
from protoviz_core.prototypes.store import ShardId, build_index, open_prototypes, write_shard

CHANNELS = [0, 3, 5, 7, 9]
EPOCHS = [0, 1, 2]


def _colour(aug, epoch, channel, repeat):
    """A flat colour that differs for every prototype (JPEG keeps flat cells recognisable)."""
    return (
        torch.tensor([40 * (channel % 6) + 20, 80 * epoch + 30 * repeat, 200 if aug == "clrjit" else 60])
        / 255
    )


def _store(root, aug="clrjit", seed=1, size=16):
    shards = []
    for epoch in EPOCHS:
        for layer in ("layer1", "layer3"):
            for repeat in (1, 2):
                images = torch.stack(
                    [_colour(aug, epoch, c, repeat)[:, None, None].expand(3, size, size) for c in CHANNELS]
                )
                n = len(CHANNELS)
                write_shard(
                    root,
                    ShardId(epoch, layer, repeat),
                    f"{aug}{seed}",
                    Prototypes(
                        images=images,
                        activations=torch.arange(n) + epoch + repeat / 10,
                        latents=torch.zeros(n, 2),
                        channels=torch.tensor(CHANNELS),
                        dead=torch.zeros(n, dtype=torch.bool),
                        redrawn=torch.zeros(n, dtype=torch.bool),
                        evolution_activations=torch.zeros(n),
                    ),
                )
                shards.append(ShardId(epoch, layer, repeat))
    build_index(root, shards, aug=aug, seed=seed)
    return open_prototypes(root)


def _masks(size=16):
    top = torch.zeros(size, size)
    top[: size // 2] = 1
    return MaskSet({0: {"layer1": top, "layer3": top}, 2: {"layer1": top.flip(0), "layer3": top}})


def test_sprite_cells_hold_each_unit_and_manifest_describes_them(tmp_path):
    manifest = write_run_part(
        _store(tmp_path / "store"), _masks(), tmp_path / "part", name="clrjit-seed1-x", thumb_size=8
    )
    assert (
        manifest["epochs"] == EPOCHS
        and manifest["repeats"] == [1, 2]
        and manifest["layers"] == ["layer1", "layer3"]
    )
    assert (
        manifest["channels"]["layer3"] == CHANNELS
        and manifest["thumb"] == 8
        and manifest["columns"]["layer1"] == 3
    )
    assert read_manifest(tmp_path / "part") == manifest
    sheet = np.asarray(Image.open(tmp_path / "part" / manifest["sprites"]["e0002-layer3-r2"]))
    assert sheet.shape == (2 * 8, 3 * 8, 3)
    for position, channel in enumerate(CHANNELS):
        row, column = divmod(position, 3)
        cell = sheet[row * 8 + 2 : row * 8 + 6, column * 8 + 2 : column * 8 + 6].reshape(-1, 3).mean(0)
        expected = _colour("clrjit", 2, channel, 2).numpy() * 255
        assert np.abs(cell - expected).max() < 12, (channel, cell, expected)
    assert manifest["activations"]["layer3"][2][1] == pytest.approx([c + 2.2 for c in range(5)], abs=1e-4)
    # The scrubbing layout: one strip per unit, a row per repeat, a column per epoch.
    strip = np.asarray(Image.open(tmp_path / "part" / manifest["strips"]["layer3-c7"]))
    assert strip.shape == (2 * 8, len(EPOCHS) * 8, 3)
    for row, repeat in enumerate((1, 2)):
        for column, epoch in enumerate(EPOCHS):
            cell = strip[row * 8 + 2 : row * 8 + 6, column * 8 + 2 : column * 8 + 6].reshape(-1, 3).mean(0)
            expected = _colour("clrjit", epoch, 7, repeat).numpy() * 255
            assert np.abs(cell - expected).max() < 12, (repeat, epoch, cell, expected)
    assert sorted(manifest["strips"]) == sorted(
        f"{layer}-c{c}" for layer in ("layer1", "layer3") for c in CHANNELS
    )
    # Epoch 1 has no mask of its own: the nearest earlier one (epoch 0) is shown.
    mask1 = np.asarray(Image.open(tmp_path / "part" / manifest["masks"]["e0001-layer1"]))
    dimmed = round(0.3 * 255)  # a dimming overlay: outside the field grey, never black
    assert mask1[1, 3, 0] == 255 and mask1[6, 3, 0] == dimmed
    mask2 = np.asarray(Image.open(tmp_path / "part" / manifest["masks"]["e0002-layer1"]))
    assert mask2[1, 3, 0] == dimmed and mask2[6, 3, 0] == 255


def test_rerun_writes_only_missing_sheets_and_removes_stale_ones(tmp_path):
    store = _store(tmp_path / "store")
    manifest = write_run_part(store, _masks(), tmp_path / "part", name="r", thumb_size=8)
    first = tmp_path / "part" / manifest["sprites"]["e0000-layer1-r1"]
    stamp = first.stat().st_mtime_ns
    first.with_name("e0000-layer1-r1-000000000000.jpg").write_bytes(b"stale")
    manifest = write_run_part(store, _masks(), tmp_path / "part", name="r", thumb_size=8)
    assert first.stat().st_mtime_ns == stamp
    assert not first.with_name("e0000-layer1-r1-000000000000.jpg").exists()
    strip = tmp_path / "part" / manifest["strips"]["layer1-c0"]
    strip_stamp = strip.stat().st_mtime_ns
    manifest = write_run_part(store, _masks(), tmp_path / "part", name="r", thumb_size=8)
    assert strip.stat().st_mtime_ns == strip_stamp
    # New content, new names
    changed = write_run_part(store, _masks(), tmp_path / "part", name="r", thumb_size=4)
    assert not first.exists() and len(list((tmp_path / "part/sprites").glob("*.jpg"))) == 12
    assert not strip.exists() and len(list((tmp_path / "part/strips").glob("*.jpg"))) == 10
    assert changed["sprites"] != manifest["sprites"] and changed["strips"] != manifest["strips"]


def _two_condition_atlas(root):
    manifests = []
    for aug in ("clrjit", "keepclr"):
        name = f"{aug}-seed1-test"
        manifests.append(
            write_run_part(
                _store(root / f"store-{aug}", aug=aug),
                _masks(),
                root / "atlas/runs" / name,
                name=name,
                thumb_size=16,
            )
        )
    return write_viewer(root / "atlas", manifests), manifests


def test_viewer_references_only_files_that_exist(tmp_path):
    page, manifests = _two_condition_atlas(tmp_path)
    atlas = page.parent
    html = page.read_text()
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert (atlas / reference).is_file(), reference
    data = json.loads((atlas / "runs.js").read_text().removeprefix("window.PROTOVIZ_ATLAS = ").rstrip(";\n"))
    assert [run["aug"] for run in data["runs"]] == ["clrjit", "keepclr"]
    for run in data["runs"]:
        for relative in [*run["sprites"].values(), *run["strips"].values(), *run["masks"].values()]:
            assert (atlas / "runs" / run["name"] / relative).is_file(), relative
    with pytest.raises(FileNotFoundError, match="no run part"):
        write_viewer(tmp_path / "elsewhere", manifests)


def _wait_loaded(driver):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script(
            "const t = [...document.querySelectorAll('.tile')];"
            "return t.length > 0 && t.every((e) => e.dataset.state === 'loaded');"
        )
    )


def _open(driver, page, fragment):
    """Show ``page`` at ``fragment`` (the viewer's state) and wait until its tiles are loaded."""
    driver.get(page.as_uri() + fragment)
    _wait_loaded(driver)


def test_atlas_slider_changes_the_shown_prototypes_in_chromium(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, manifests = _two_condition_atlas(tmp_path)
    _open(browser, page, "#layer=layer3&unit=7")
    sections = browser.find_elements(By.CSS_SELECTOR, "section.run")
    assert [s.get_attribute("data-run") for s in sections] == ["clrjit-seed1-test", "keepclr-seed1-test"]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".tile")) == 4  # two conditions x two repeats
    slider = browser.find_element(By.ID, "epoch")
    assert browser.find_element(By.ID, "epoch-label").text == "2"  # opens at the last epoch
    tile = browser.find_elements(By.CSS_SELECTOR, ".tile")[0]
    before_url, before_pixels = tile.get_attribute("data-src"), tile.screenshot_as_png
    activation = browser.find_elements(By.CSS_SELECTOR, ".activation")[0].text
    assert float(activation) == pytest.approx(manifests[0]["activations"]["layer3"][2][0][3], abs=1e-3)

    slider.send_keys(Keys.ARROW_LEFT)  # the user moves the slider one epoch back
    _wait_loaded(browser)
    assert browser.find_element(By.ID, "epoch-label").text == "1"
    tile = browser.find_elements(By.CSS_SELECTOR, ".tile")[0]
    assert tile.get_attribute("data-src") == before_url  # the same strip, another cell of it
    assert tile.screenshot_as_png != before_pixels  # what is on screen changed
    assert "epoch=1" in browser.current_url  # the view can be shared by its URL
    slider.send_keys(Keys.ARROW_LEFT)
    _wait_loaded(browser)
    # Scrubbing the unit through every epoch read one strip per shown run and nothing else.
    requested = browser.execute_script("return [...window.PROTOVIZ_REQUESTED.keys()];")
    assert sorted(requested) == sorted(f"runs/{m['name']}/{m['strips']['layer3-c7']}" for m in manifests)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_activation_curves_follow_the_unit_in_each_condition(tmp_path, browser):
    from selenium.webdriver.common.by import By

    page, manifests = _two_condition_atlas(tmp_path)
    _open(browser, page, "#layer=layer3&unit=9&epoch=1")
    curves = browser.find_elements(By.CSS_SELECTOR, "section.run svg.curve")
    assert len(curves) == 2  # both conditions side by side, one curve box each
    for curve, manifest in zip(curves, manifests):
        lines = curve.find_elements(By.CSS_SELECTOR, "polyline")
        assert [line.get_attribute("data-repeat") for line in lines] == ["1", "2"]
        # Unit 9 (position 4) rises by 1 per epoch in the test store: y falls left to right.
        heights = [float(point.split(",")[1]) for point in lines[0].get_attribute("points").split()]
        assert len(heights) == len(EPOCHS) and heights[0] > heights[1] > heights[2]
        now = curve.find_element(By.CSS_SELECTOR, "line.now")
        xs = [float(point.split(",")[0]) for point in lines[0].get_attribute("points").split()]
        assert float(now.get_attribute("x1")) == pytest.approx(xs[1], abs=0.2)  # at epoch 1


def test_layer_overview_shows_every_unit_and_a_click_opens_one(tmp_path, browser):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By

    page, manifests = _two_condition_atlas(tmp_path)
    _open(browser, page, "#view=layer&layer=layer3&unit=0&epoch=2")
    sheet = browser.find_element(By.CSS_SELECTOR, ".overview")
    expected = f"runs/{manifests[0]['name']}/{manifests[0]['sprites']['e0002-layer3-r1']}"
    assert sheet.get_attribute("data-src") == expected  # the layer's sheet, not per-unit strips
    assert (sheet.size["width"], sheet.size["height"]) == (3 * 48, 2 * 48)  # 5 units in 3 columns
    # Click the cell of the fourth unit (row 1, column 0): channel 7 opens in the unit view.
    ActionChains(browser).move_to_element_with_offset(
        sheet, -sheet.size["width"] // 2 + 24, -sheet.size["height"] // 2 + 48 + 24
    ).click().perform()
    _wait_loaded(browser)
    assert browser.find_element(By.ID, "view").get_attribute("value") == "unit"
    assert browser.find_element(By.ID, "unit").get_attribute("value") == "7"
    assert "view=unit" in browser.current_url and "unit=7" in browser.current_url
    assert len(browser.find_elements(By.CSS_SELECTOR, "section.run")) == 2


def test_a_run_part_from_before_strips_is_shown_from_its_layer_sheets(tmp_path, browser):
    from selenium.webdriver.common.by import By

    _, manifests = _two_condition_atlas(tmp_path)
    old = {
        key: value for key, value in manifests[1].items() if key != "strips"
    }  # as an older report wrote it
    page = write_viewer(tmp_path / "atlas", [manifests[0], old])
    _open(browser, page, "#layer=layer3&unit=7&epoch=1")
    tiles = browser.find_elements(By.CSS_SELECTOR, "section.run .tile")
    sources = [tile.get_attribute("data-src") for tile in tiles]
    assert sources[:2] == [f"runs/{manifests[0]['name']}/{manifests[0]['strips']['layer3-c7']}"] * 2
    assert sources[2:] == [f"runs/{old['name']}/{old['sprites'][f'e0001-layer3-r{r}']}" for r in (1, 2)]


# Natural exemplars: a pool of flat grey levels, image i has level 10 * i + 5.
POOL_IMAGES = 24
TOP_K = 3


def _exemplar_set(root, size=16) -> ExemplarSet:
    with SplitWriter(root / "data", "unlabeled") as writer:
        writer.write(np.stack([np.full((3, size, size), 10 * i + 5, np.uint8) for i in range(POOL_IMAGES)]))
    by_epoch = {}
    for epoch in EPOCHS:
        layers = {}
        for layer in ("layer1", "layer3"):
            channels = torch.arange(10)[:, None]
            positions = (
                channels + 2 * epoch + torch.arange(TOP_K)[None]
            ) % POOL_IMAGES  # (10, k): per unit and epoch
            activations = (40.0 - torch.arange(TOP_K, dtype=torch.float32))[None].repeat(10, 1) + channels
            layers[layer] = {"activations": activations, "positions": positions}
        by_epoch[epoch] = {
            "key": f"ex{epoch}",
            "pool": {"splits": ["unlabeled"], "sizes": [POOL_IMAGES]},
            "sample": POOL_IMAGES,
            "layers": layers,
        }
    return ExemplarSet(by_epoch, Pool(root / "data", ("unlabeled",), size))


def _store_with_ratios(root, exemplars, aug="clrjit"):
    store = _store(root, aug=aug)
    shards = [ShardId(e, layer, r) for e in EPOCHS for layer in ("layer1", "layer3") for r in (1, 2)]
    build_index(
        root,
        shards,
        aug=aug,
        seed=1,
        natural_best=lambda epoch, layer, channels: best_natural(exemplars.by_epoch[epoch], layer, channels),
    )
    return open_prototypes(store.root)


def test_exemplar_strips_and_sheets_hold_each_units_top_images_per_epoch(tmp_path):
    exemplars = _exemplar_set(tmp_path)
    store = _store_with_ratios(tmp_path / "store", exemplars)
    manifest = write_run_part(store, _masks(), tmp_path / "part", name="r", thumb_size=8, exemplars=exemplars)
    part = manifest["exemplars"]
    assert part["k"] == TOP_K and part["sample"] == POOL_IMAGES
    strip = np.asarray(Image.open(tmp_path / "part" / part["strips"]["layer3-c7"]))
    assert strip.shape == (len(EPOCHS) * 8, TOP_K * 8, 3)  # a row per epoch, a column per exemplar
    for row, epoch in enumerate(EPOCHS):
        for column in range(TOP_K):
            level = strip[row * 8 + 2 : row * 8 + 6, column * 8 + 2 : column * 8 + 6].mean()
            assert abs(level - (10 * ((7 + 2 * epoch + column) % POOL_IMAGES) + 5)) < 6, (
                epoch,
                column,
                level,
            )
    sheet = np.asarray(Image.open(tmp_path / "part" / part["sheets"]["e0002-layer1"]))
    assert sheet.shape == (2 * 8, 3 * 8, 3)  # the prototype sheet's layout: 5 units in 3 columns
    for position, channel in enumerate(CHANNELS):
        row, column = divmod(position, 3)
        level = sheet[row * 8 + 2 : row * 8 + 6, column * 8 + 2 : column * 8 + 6].mean()
        assert abs(level - (10 * ((channel + 4) % POOL_IMAGES) + 5)) < 6, (channel, level)
    assert part["activations"]["layer3"][1][3] == [47.0, 46.0, 45.0]  # epoch 1, channel 7: 40 + 7 - j
    # Each prototype's ratio: its activation over the unit's best exemplar's.
    assert manifest["superstimulus"]["layer3"][2][1][3] == pytest.approx((3 + 2.2) / 47, abs=1e-4)
    again = write_run_part(store, _masks(), tmp_path / "part", name="r", thumb_size=8, exemplars=exemplars)
    assert again["exemplars"] == part  # a rerun finds every file in place


def _unit_scores(epoch: int) -> dict:
    """A readability stage result for layer3 (unit c scores 0.5 + c / 20 from its prototypes at epoch 2)."""
    channels = torch.tensor(CHANNELS)
    return {
        "layer3": {
            "channels": channels,
            "prototypes": 0.5 + channels.double() / 20 * (epoch / 2),
            "exemplars": torch.full((len(CHANNELS),), 0.95, dtype=torch.float64),
            "control": torch.full((len(CHANNELS),), 0.5, dtype=torch.float64),
        }
    }


def _atlas_with_exemplars(root):
    manifests = []
    for aug in ("clrjit", "keepclr"):
        name = f"{aug}-seed1-ex"
        exemplars = _exemplar_set(root / aug)
        store = _store_with_ratios(root / f"store-{aug}", exemplars, aug=aug)
        # clrjit has readability scores at epochs 0 and 2 (none at 1); keepclr none.
        scores = {0: _unit_scores(0), 2: _unit_scores(2)} if aug == "clrjit" else None
        manifests.append(
            write_run_part(
                store,
                _masks(),
                root / "atlas/runs" / name,
                name=name,
                thumb_size=16,
                exemplars=exemplars,
                readability=scores,
            )
        )
    return write_viewer(root / "atlas", manifests), manifests


def test_a_units_readability_scores_are_in_the_manifest_and_its_page(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, manifests = _atlas_with_exemplars(tmp_path)
    scores = manifests[0]["readability"]
    assert scores["layer1"] == [None, None, None] and scores["layer3"][1] is None  # no scores: none shown
    assert scores["layer3"][2][CHANNELS.index(7)] == [0.85, 0.95]
    assert "readability" not in manifests[1]
    _open(browser, page, "#layer=layer3&unit=7&epoch=2")
    notes = browser.find_elements(By.CSS_SELECTOR, "section.run p.readability")
    assert [n.text for n in notes] == [
        "machine 2-AFC at epoch 2: from its prototypes 0.85, from its exemplars 0.95 (chance 0.50)"
    ]
    browser.find_element(By.ID, "epoch").send_keys(Keys.ARROW_LEFT)  # epoch 1: no scores
    _wait_loaded(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "section.run p.readability") == []


def test_unit_view_shows_exemplars_of_the_epoch_and_the_ratio_curve_in_chromium(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, manifests = _atlas_with_exemplars(tmp_path)
    _open(browser, page, "#layer=layer3&unit=7&epoch=2")
    rows = browser.find_elements(By.CSS_SELECTOR, "section.run .exemplars")
    assert len(rows) == 2  # beside the prototypes of both conditions
    tiles = rows[0].find_elements(By.CSS_SELECTOR, ".exemplar")
    assert len(tiles) == TOP_K
    assert (
        tiles[0].get_attribute("data-src")
        == f"runs/{manifests[0]['name']}/{manifests[0]['exemplars']['strips']['layer3-c7']}"
    )
    assert [c.text for c in rows[0].find_elements(By.CSS_SELECTOR, "figcaption")] == [
        "47.00",
        "46.00",
        "45.00",
    ]
    before = tiles[1].screenshot_as_png
    ratio = browser.find_elements(By.CSS_SELECTOR, ".ratio")[0].text
    assert float(ratio) == pytest.approx(manifests[0]["superstimulus"]["layer3"][2][0][3], abs=0.01)
    curve = browser.find_elements(By.CSS_SELECTOR, "section.run svg.curve")[0]
    assert curve.get_attribute("data-quantity") == "ratio" and curve.find_elements(
        By.CSS_SELECTOR, "line.unity"
    )

    # Epoch 1: the unit's exemplars of epoch 1
    browser.find_element(By.ID, "epoch").send_keys(Keys.ARROW_LEFT)
    _wait_loaded(browser)
    tiles = browser.find_elements(By.CSS_SELECTOR, "section.run .exemplars .exemplar")
    assert tiles[1].screenshot_as_png != before
    assert tiles[1].value_of_css_property("background-position") == f"-{1 * 64}px -{1 * 64}px"

    # The raw activation, on request; its top label fits the margin (304.75 once showed as "04.75").
    browser.execute_script(
        "document.getElementById('curve').value = 'activation';"
        "document.getElementById('curve').dispatchEvent(new Event('change'));"
    )
    curve = browser.find_elements(By.CSS_SELECTOR, "section.run svg.curve")[0]
    assert curve.get_attribute("data-quantity") == "activation" and "curve=activation" in browser.current_url
    top = curve.find_element(By.CSS_SELECTOR, "text.top")
    assert top.text == "5.2" and top.location["x"] >= curve.location["x"]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_curve_labels_fit_for_large_activations_in_chromium(tmp_path, browser):
    from selenium.webdriver.common.by import By

    _, manifests = _atlas_with_exemplars(tmp_path)
    big = json.loads(json.dumps(manifests[0]))
    big["activations"]["layer3"][0][0][3] = 304.75
    page = write_viewer(tmp_path / "atlas", [big])
    browser.get(page.as_uri() + "#layer=layer3&unit=7&epoch=0&curve=activation")
    curve = browser.find_element(By.CSS_SELECTOR, "svg.curve")
    top = curve.find_element(By.CSS_SELECTOR, "text.top")
    assert top.text == "305" and top.location["x"] >= curve.location["x"]


def test_layer_overview_shows_each_units_best_natural_image_beside_its_prototype(tmp_path, browser):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By

    page, manifests = _atlas_with_exemplars(tmp_path)
    _open(browser, page, "#view=layer&layer=layer3&unit=0&epoch=2")
    sheets = browser.find_elements(By.CSS_SELECTOR, ".overview")
    assert [s.get_attribute("data-kind") for s in sheets] == ["prototypes", "exemplars"]
    assert (
        sheets[1].get_attribute("data-src")
        == f"runs/{manifests[0]['name']}/{manifests[0]['exemplars']['sheets']['e0002-layer3']}"
    )
    assert sheets[1].size == sheets[0].size
    ActionChains(browser).move_to_element_with_offset(
        sheets[1], -sheets[1].size["width"] // 2 + 48 + 24, -sheets[1].size["height"] // 2 + 24
    ).click().perform()
    _wait_loaded(browser)  # the second cell of the exemplar sheet is unit 3
    assert browser.find_element(By.ID, "view").get_attribute("value") == "unit"
    assert browser.find_element(By.ID, "unit").get_attribute("value") == "3"
