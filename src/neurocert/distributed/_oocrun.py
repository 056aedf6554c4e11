"""Child process of the out-of-core demonstration: run every computation on a store.

``python -m neurocert.distributed._oocrun ACTIVATIONS CONCEPTS OUT.npz [options]``
runs :func:`similarity`, :func:`identify` and :func:`bootstrap_explain` of
:mod:`neurocert.distributed` (serially, block after block) on on-disk activations,
saves the results to ``OUT.npz`` and prints one JSON line with memory figures.
Started under ``RLIMIT_DATA`` by ``benchmarks/bench_dask.py`` and
``tests/test_outofcore.py``.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("activations")
    ap.add_argument("concepts")
    ap.add_argument("out")
    ap.add_argument("--memory-per-block", type=int, default=32 * 2**20)
    ap.add_argument("--n-boot", type=int, default=20)
    ap.add_argument("--top-frac", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip")
    args = ap.parse_args(argv)

    import numpy as np
    import zarr

    # one codec thread: every thread's stack counts against RLIMIT_DATA
    zarr.config.set({"threading.max_workers": 1})

    from . import bootstrap_explain, identify, similarity
    from ._limits import AnonPeak, memory_status

    skip = set(filter(None, args.skip.split(",")))
    base = memory_status()
    out: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    mb = args.memory_per_block
    with AnonPeak() as peak:
        if "auroc" not in skip:
            t = time.perf_counter()
            out["auroc"] = similarity(args.activations, args.concepts, metric="auroc",
                                      memory_per_block=mb)
            times["similarity_auroc_s"] = time.perf_counter() - t
        if "identify" not in skip:
            t = time.perf_counter()
            res = identify(args.activations, args.concepts, metric="iou",
                           top_frac=args.top_frac, memory_per_block=mb)
            times["identify_iou_s"] = time.perf_counter() - t
            out["iou"] = res.similarity
            out["iou_lower"] = res.lower
            out["iou_best"] = res.best
            out["iou_p"] = res.p_values(0.02)
        if "bootstrap" not in skip:
            t = time.perf_counter()
            ex = bootstrap_explain(args.activations, args.concepts, metric="iou",
                                   top_frac=args.top_frac, n_boot=args.n_boot, rng=args.seed,
                                   memory_per_block=mb)
            times["bootstrap_iou_s"] = time.perf_counter() - t
            out["boot_prob"] = ex.probabilities
            out["boot_winners"] = ex.winners
    end = memory_status()
    np.savez(args.out, **out)
    print(json.dumps({"peak_rss_anon": peak.peak, "samples": peak.samples,
                      "rss_anon_after_imports": base.get("RssAnon", 0),
                      "vm_data_after_imports": base.get("VmData", 0),
                      "vm_hwm": end.get("VmHWM", 0), "vm_peak": end.get("VmPeak", 0),
                      "times": times}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
