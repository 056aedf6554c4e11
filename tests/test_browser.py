"""The HTML report in a real browser: headless Debian Chromium driven by Playwright.

Never runs ``playwright install``: Playwright drives ``/usr/bin/chromium`` (the Debian
package) through ``executable_path``. Skipped locally when either is missing;
required in CI (``NEUROCERT_REQUIRE_ASSETS=1``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_asset

import neurocert
from neurocert.report import ImageExemplars, LayerResults, TextExemplar, write_report
from neurocert.simulate import planted_layer

CHROMIUM = os.environ.get("NEUROCERT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
EVIL = "<script>window.__pwned=1</script>"
EVIL_NEURON = "<img src=x onerror=window.__pwned=2>"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require_asset(sync_playwright is not None, "Python playwright (pip install playwright)")
    require_asset(Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None,
                  f"Chromium at {CHROMIUM} (apt-get install -y --no-install-recommends chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    sep = [3.0, 2.0, 1.0, 0.3, 0.1] * 5
    lay = planted_layer(3000, 25, 8, concept_freq=0.12, separation=sep, n_planted=22, rng=4)
    names = [f"concept {i}" for i in range(8)]
    names[3] = EVIL
    neurons = [f"unit {j}" for j in range(25)]
    neurons[7] = EVIL_NEURON
    expl = neurocert.bootstrap_explain(lay.activations, lay.concepts, metric="auroc", n_boot=120,
                                       rng=0, mode="both", concept_names=names,
                                       neuron_names=neurons)
    iou = neurocert.identify(lay.activations, lay.concepts, metric="iou", top_frac=0.05,
                             concept_names=names, neuron_names=neurons)
    layer = LayerResults.from_results({"auroc": expl, "iou": iou})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3000, 24, 24, 3), dtype=np.uint8)
    maps = np.abs(lay.activations)[:, :, None, None] * rng.random((3000, 25, 3, 3))
    image_provider = ImageExemplars(images, maps, k=3)

    def provider(j):
        if j % 2:
            return [TextExemplar(["a", EVIL, "b"], [0.0, 1.0, 0.2], caption="text")]
        return image_provider(j)

    path = write_report(layer, tmp / "report.html", exemplars=provider)
    return path, layer


def _open(browser, path, errors, width=1280, height=900):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
            else errors.append(f"request: {r.url}"))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function("() => window.neurocertReport && window.neurocertReport.ready",
                           timeout=10_000)
    return page


def _order(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all(
        ".card", "cs => cs.map(c => c.getAttribute('data-index'))")]


def _visible(page) -> int:
    return page.eval_on_selector_all(".card", "cs => cs.filter(c => !c.hidden).length")


def test_report_in_chromium(browser, report, artifacts_dir):
    path, layer = report
    errors: list[str] = []
    page = _open(browser, path, errors)
    auroc = layer.neuron_rows("auroc")

    # one card per neuron of the table
    assert page.locator(".card").count() == layer.n_neurons == len(set(layer.pairs["neuron"]))
    assert page.text_content("#nc-count") == f"{layer.n_neurons} of {layer.n_neurons} neurons"

    # clicking a column header reorders the cards: similarity descending, then ascending
    sim = np.nan_to_num(auroc["similarity"], nan=-np.inf)
    page.click(".thead button[data-key=similarity]")
    expected = sorted(range(layer.n_neurons), key=lambda j: (-sim[j], j))
    assert _order(page) == expected
    assert page.get_attribute(".thead button[data-key=similarity]", "aria-sort") == "descending"
    page.click(".thead button[data-key=similarity]")
    assert _order(page) == sorted(range(layer.n_neurons), key=lambda j: (sim[j], j))
    page.click(".thead button[data-key=set]")
    size = auroc["set_size"]
    assert _order(page) == sorted(range(layer.n_neurons), key=lambda j: (-size[j], j))

    # filters give the expected counts
    page.select_option("#nc-verdict", "stable")
    assert _visible(page) == int(np.sum(auroc["verdict"] == "stable")) > 0
    page.select_option("#nc-verdict", "not_certified")
    assert _visible(page) == int(np.sum(auroc["verdict"] == "not_certified")) > 0
    page.select_option("#nc-verdict", "")
    page.fill("#nc-filter", "concept 1")
    want = sum(1 for j in range(layer.n_neurons) if "concept 1" in auroc["label"][j].lower()
               or "concept 1" in auroc["neuron"][j].lower())
    assert _visible(page) == want > 0
    page.fill("#nc-filter", "")
    assert _visible(page) == layer.n_neurons

    # escaped names show as text and nothing ran
    card7 = page.locator("#neuron-7")
    card7.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('#neuron-7 svg') !== null")
    assert card7.locator(".c-neuron").text_content() == EVIL_NEURON
    assert EVIL in card7.text_content()  # the text exemplar and/or a concept row
    assert page.evaluate("() => window.__pwned === undefined")
    assert page.locator("#neuron-7 script").count() == 0

    # switching method re-renders the rows and the counts
    page.select_option("#nc-method", "1")
    page.select_option("#nc-verdict", "stable")
    iou = layer.neuron_rows("iou")
    assert _visible(page) == int(np.sum(iou["verdict"] == "stable"))
    page.select_option("#nc-verdict", "")
    page.select_option("#nc-method", "0")

    page.click(".thead button[data-key=similarity]")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts_dir / "report.png"), full_page=False)
    page.locator(".card").first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "report-cards.png"), full_page=False)
    page.close()
    assert errors == []
    assert (artifacts_dir / "report.png").stat().st_size > 10_000


def test_lazy_cards_fill_while_scrolling(browser, report):
    path, layer = report
    errors: list[str] = []
    page = _open(browser, path, errors, height=600)
    filled = page.eval_on_selector_all(".card", "cs => cs.filter(c => c.querySelector('svg')).length")
    assert 0 < filled <= layer.n_neurons
    page.locator(".card").last.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => document.querySelector('.card:last-child svg') !== null", timeout=5_000)
    page.close()
    assert errors == []
