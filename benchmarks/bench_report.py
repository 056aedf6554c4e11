"""Benchmark of the HTML report: file size and load time in headless Chromium.

Usage::

    python benchmarks/bench_report.py                 # 2,048 neurons, 4 image exemplars each
    python benchmarks/bench_report.py --quick         # 128 neurons (smoke run)
    python benchmarks/bench_report.py --no-exemplars  # statistics only

What is measured (targets of issue 6: <= 25 MB and <= 5 s for a 2,048-neuron layer):

1. A layer of ``--neurons`` neurons with ``--concepts`` concepts is simulated
   (:func:`neurocert.simulate.planted_layer`), explained with
   :func:`neurocert.bootstrap_explain` (IoU, top 2 %, ``--n-boot`` replicates,
   bootstrap and split sets) and certified by :func:`neurocert.identify` (AUROC);
   both methods go into one :class:`neurocert.report.LayerResults`.
2. Exemplars: ``--k`` images per neuron out of a pool of ``4 * neurons``
   112 x 112 synthetic photos (smooth random fields plus grain, so JPEG sizes are
   near those of photographs, not of white noise) ranked by random scores (so
   most neurons' images differ), with 7 x 7 activation maps; 64-pixel JPEG
   thumbnails; a sample shared between neurons is embedded once.
3. The time to build and write the report, its size, and the load time in
   Chromium (Debian package, through Playwright): navigation start to the end of
   the report's start-up script (every card built, sort and filter ready), the
   median of ``--repeats`` fresh pages; also the time until the first card
   its chart and thumbnails after scrolling to the cards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import neurocert
from neurocert.report import ImageExemplars, LayerResults, write_report
from neurocert.simulate import planted_layer

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def synthetic_photo(i: int, size: int = 112) -> np.ndarray:
    """Sample ``i``: a smooth colour field with grain (compresses like a photograph)."""
    rng = np.random.default_rng([7, i])
    coarse = rng.random((8, 8, 3))
    idx = np.arange(size) * 8 // size
    grain = rng.normal(scale=0.04, size=(size, size, 3))
    return (np.clip(coarse[idx][:, idx] + grain, 0, 1) * 255).astype(np.uint8)


def activation_map(i: int, j: int) -> np.ndarray:
    """7 x 7 map of neuron ``j`` on sample ``i`` (a blob at a random place)."""
    rng = np.random.default_rng([11, i, j])
    y, x = np.mgrid[0:7, 0:7]
    cy, cx = rng.uniform(0, 6, size=2)
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 4.0)


def measure(path: Path, repeats: int, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    loads, filled = [], []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.perf_counter()
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function("() => window.neurocertReport && window.neurocertReport.ready",
                                   timeout=60_000)
            ready_ms = page.evaluate("() => window.neurocertReport.ms")
            page.evaluate("() => document.querySelector('#nc-cards').scrollIntoView()")
            page.wait_for_function("() => document.querySelector('.card svg') !== null",
                                   timeout=60_000)
            filled.append(time.perf_counter() - t0)
            loads.append(ready_ms / 1000)
            n_cards = page.locator(".card").count()
            page.close()
        browser.close()
    return {"load_s_median": statistics.median(loads), "load_s_all": loads,
            "first_cards_s_median": statistics.median(filled), "cards": n_cards,
            "page_errors": errors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--neurons", type=int, default=2048)
    ap.add_argument("--concepts", type=int, default=300)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--k", type=int, default=4, help="image exemplars per neuron")
    ap.add_argument("--no-exemplars", action="store_true")
    ap.add_argument("--quick", action="store_true", help="128 neurons, 50 concepts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--out", type=Path, default=None, help="keep the report here")
    args = ap.parse_args(argv)
    if args.quick:
        args.neurons, args.concepts, args.samples = 128, 50, 2000

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    sep = np.resize([3.0, 1.5, 0.7, 0.3], args.neurons)
    lay = planted_layer(args.samples, args.neurons, args.concepts,
                        concept_freq=np.geomspace(0.2, 0.01, args.concepts), separation=sep,
                        n_planted=int(0.8 * args.neurons), rng=0)
    names = [f"concept_{i}" for i in range(args.concepts)]
    neurons = [f"layer4.{j}" for j in range(args.neurons)]
    expl = neurocert.bootstrap_explain(lay.activations, lay.concepts, metric="iou",
                                       top_frac=0.02, n_boot=args.n_boot, rng=0, mode="both",
                                       concept_names=names, neuron_names=neurons)
    auroc = neurocert.identify(lay.activations, lay.concepts, metric="auroc",
                               concept_names=names, neuron_names=neurons)
    t_stats = time.perf_counter() - t0
    t0 = time.perf_counter()
    layer = LayerResults.from_results({"netdissect_iou": expl, "auroc": auroc})
    t_layer = time.perf_counter() - t0
    provider = None
    if not args.no_exemplars:
        # a pool of 4 x n_neurons probing images; random scores make the top images of
        # different neurons mostly different, as in a large probing set
        pool = 4 * args.neurons
        scores = rng.random((pool, args.neurons), dtype=np.float32)
        provider = ImageExemplars(synthetic_photo, scores, k=args.k, maps=activation_map)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.out) if args.out else Path(tmp) / "report.html"
        t0 = time.perf_counter()
        write_report(layer, path, exemplars=provider)
        t_write = time.perf_counter() - t0
        size = path.stat().st_size
        browser = measure(path, args.repeats, args.chromium)
    result = {
        "neurons": args.neurons, "concepts": args.concepts, "samples": args.samples,
        "n_boot": args.n_boot, "exemplars_per_neuron": 0 if provider is None else args.k,
        "table_rows": len(layer.pairs["method"]), "statistics_s": round(t_stats, 2),
        "layer_results_s": round(t_layer, 3), "write_report_s": round(t_write, 2),
        "size_mb": round(size / 1e6, 2), **browser,
    }
    print(json.dumps(result, indent=1))
    ok = size <= 25e6 and browser["load_s_median"] <= 5 and not browser["page_errors"]
    print(f"report: {size / 1e6:.2f} MB (target <= 25), loads in "
          f"{browser['load_s_median']:.2f} s (target <= 5): {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
