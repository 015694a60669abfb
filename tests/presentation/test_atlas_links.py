"""Links between the atlas's runs: matched units and units that respond alike, in files and in Chromium."""

import json

import pytest
import torch

from protoviz_core.measures.similarity import gram
from protoviz_core.presentation.atlas import write_viewer
from protoviz_core.presentation.atlas_links import unit_links, write_links
from tests.presentation.test_atlas import CHANNELS, EPOCHS, _open, _two_condition_atlas, _wait_loaded

UNITS = 12  # channels per layer; CHANNELS of them are extracted
# keepclr's channel PARTNER[c] is clrjit's channel c; it maps extracted channels to extracted ones.
PARTNER = {0: 9, 9: 0, 3: 7, 7: 3, 5: 5, 1: 2, 2: 1, 4: 4, 6: 6, 8: 8, 10: 11, 11: 10}


def _files() -> dict[str, dict]:
    """Similarity files of the two runs: keepclr's units are clrjit's with channels renumbered;
    keepclr's epoch 2 was measured on other images."""
    generator = torch.Generator().manual_seed(0)
    files = {"clrjit": {}, "keepclr": {}}
    layers = {layer: torch.randn(40, UNITS, generator=generator) for layer in ("layer1", "layer3")}
    for epoch in EPOCHS:
        for run in files:
            contents = {"layers": {}, "positions": torch.arange(40), "sample": "held-out"}
            if run == "keepclr" and epoch == 2:
                contents["sample"] = "other images"
            for layer, units in layers.items():
                if run == "keepclr":
                    renumbered = torch.empty_like(units)
                    for c, partner in PARTNER.items():
                        renumbered[:, partner] = units[:, c]
                    units = renumbered
                contents["layers"][layer] = {"units": units, "gram": gram(units)}
            files[run][epoch] = contents
    return files


def test_each_unit_is_linked_to_its_partner_in_the_other_run_and_to_units_that_respond_alike(tmp_path):
    _, manifests = _two_condition_atlas(tmp_path)
    by_run = {m["aug"]: m for m in manifests}
    links = unit_links(_files(), by_run, k=4)
    clrjit = links["clrjit-seed1-test"]["layer3"]
    matches = clrjit["matches"]["keepclr-seed1-test"]
    assert clrjit["channels"] == CHANNELS and clrjit["epochs"] == EPOCHS
    for kind in ("best", "shown", "one_to_one"):
        for epoch_index in (0, 1):
            assert matches[kind][epoch_index] == [[PARTNER[c], pytest.approx(1.0)] for c in CHANNELS]
        assert matches[kind][2] is None  # the other run's epoch 2 is on other images
    # At the last epoch, unit 3's most alike units: itself at epochs 0 and 1, and its partner (7) in
    # keepclr at every epoch (the same activations), all with correlation 1; k = 4 of those 5.
    assert clrjit["nearest"]["epoch"] == 2
    nearest = clrjit["nearest"]["units"][CHANNELS.index(3)]
    assert len(nearest) == 4
    assert {(run, layer, channel) for run, _, layer, channel, _ in nearest} <= {
        ("clrjit-seed1-test", "layer3", 3),
        ("keepclr-seed1-test", "layer3", 7),
    }
    assert all(r == pytest.approx(1.0, abs=1e-3) for *_, r in nearest)
    assert ("clrjit-seed1-test", 2, "layer3", 3) not in {tuple(n[:4]) for n in nearest}  # not itself

    # The control: a run without similarity files gets no links, and is nobody's match.
    alone = unit_links({"clrjit": _files()["clrjit"]}, by_run)
    assert list(alone) == ["clrjit-seed1-test"] and alone["clrjit-seed1-test"]["layer1"]["matches"] == {}


def test_a_units_page_shows_its_match_in_the_other_run_and_links_to_it_in_chromium(tmp_path, browser):
    from selenium.webdriver.common.by import By

    _, manifests = _two_condition_atlas(tmp_path)
    links = unit_links(_files(), {m["aug"]: m for m in manifests})
    linked = [write_links(tmp_path / "atlas", m, links[m["name"]]) for m in manifests]
    page = write_viewer(tmp_path / "atlas", linked)
    script = (tmp_path / "atlas/runs/clrjit-seed1-test" / linked[0]["links"]["layer3"]).read_text()
    assert json.loads(script.split(" = ", 2)[-1].rstrip(";\n"))["channels"] == CHANNELS

    _open(browser, page, "#run=clrjit-seed1-test&layer=layer3&unit=3&epoch=1")
    match = browser.find_element(By.CSS_SELECTOR, ".links .linked")
    assert (match.get_attribute("data-run"), match.get_attribute("data-unit")) == ("keepclr-seed1-test", "7")
    assert "r = 1.00" in match.text and "one-to-one partner: 7" in match.text
    tile = match.find_element(By.CSS_SELECTOR, ".tile")
    assert "keepclr-seed1-test/strips/layer3-c0007" in tile.get_attribute("data-src")
    match.find_element(By.TAG_NAME, "a").click()
    _wait_loaded(browser)
    assert "run=keepclr-seed1-test" in browser.current_url and "unit=7" in browser.current_url
    assert browser.find_element(By.ID, "unit").get_attribute("value") == "7"
    title = browser.find_element(By.CSS_SELECTOR, "section.run h2").text
    assert title.startswith("keepclr") and "unit 7" in title
    # Its own page links back: clrjit's unit 3 is keepclr's unit 7's match.
    back = browser.find_element(By.CSS_SELECTOR, ".links .linked")
    assert (back.get_attribute("data-run"), back.get_attribute("data-unit")) == ("clrjit-seed1-test", "3")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
