"""``neurocert dissect``: the real demonstrations (or a user's data) end to end.

With no data arguments it runs the vision demo on its quick default
(EfficientNet-Lite0 on 1,000 broden-lite images, every unit of ``_blocks.5``,
quantile 0.1, B = 200; a few minutes on 2 CPU cores from a cold start);
``--full`` runs the full demonstration (2,000 images, every unit of three
blocks, quantile 0.05, B = 500). It prints a
summary table and writes the table, manifest, HTML report and figure into
``--out`` (default: the current directory). Caches (broden-lite and the
activations) go to ``--cache-dir`` (default ``$XDG_CACHE_HOME/neurocert`` or
``~/.cache/neurocert``), so reruns skip generation and extraction.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cli import add_backend_arguments, register
from ..exceptions import ValidationError

DEMOS = ("vision", "language")
MODELS = ("efficientnet-lite0",)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/neurocert`` or ``~/.cache/neurocert``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "neurocert"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", choices=DEMOS, default="vision",
                   help="which demonstration: vision (EfficientNet-Lite0 on broden-lite) or "
                        "language (MiniLM on WordNet); default vision")
    p.add_argument("--full", action="store_true",
                   help="the full demonstration (vision: 2,000 images, every unit of three "
                        "blocks, B = 500) instead of the quick default")
    p.add_argument("--n-images", type=int, default=None, metavar="N",
                   help="broden-lite images (vision; default 1000, --full 2000)")
    p.add_argument("--layers", default=None, metavar="LIST",
                   help="comma-separated blocks, e.g. '_blocks.5,_blocks.10,_blocks.14' "
                        "(vision; default _blocks.5, --full those three); MiniLM layer "
                        "numbers, e.g. '1,3,5', for --demo language")
    p.add_argument("--quantile", type=float, default=None, metavar="Q",
                   help="NetDissect top quantile (default 0.1, --full 0.05; NetDissect's own "
                        "0.005 is reported beside it)")
    p.add_argument("--n-boot", type=int, default=None, metavar="B",
                   help="bootstrap replicates (default 200, --full 500)")
    p.add_argument("--methods", default=None, metavar="LIST",
                   help="comma-separated subset of netdissect,soft_wpmi_gt,soft_wpmi_classifier "
                        "(default: all)")
    p.add_argument("--heldout", choices=("yes", "no"), default=None,
                   help="run the held-out check on two halves of the images (default: no for "
                        "the quick default, yes with --full)")
    p.add_argument("--broden", type=Path, default=None, metavar="DIR",
                   help="probe a Broden-format folder instead of broden-lite")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="probe an image folder (class sub-folders, or --labels-csv) instead; "
                        "its labels are image-level concepts")
    p.add_argument("--labels-csv", type=Path, default=None, metavar="FILE",
                   help="with --images: CSV of file names and ';'-separated labels")
    p.add_argument("--model", choices=MODELS, default="efficientnet-lite0",
                   help="the network dissected with --broden/--images (default "
                        "efficientnet-lite0)")
    p.add_argument("--rows", type=int, default=8, metavar="N",
                   help="units printed per layer in the summary (default 8)")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="output folder (default: the current directory)")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="broden-lite and activation caches (default $XDG_CACHE_HOME/neurocert "
                        "or ~/.cache/neurocert)")
    add_backend_arguments(p, "vision: where the NetDissect and soft-WPMI explanations run: "
                             "memory (default), blocks of units, or a Dask cluster (identical "
                             "results; docs/distributed.md)")


def _options(args: argparse.Namespace) -> dict:
    from ..dissect.demos import vision

    base = dict(vision.FULL if args.full else vision.QUICK)
    if args.n_images is not None:
        base["n_images"] = args.n_images
    if args.layers is not None:
        base["layers"] = args.layers
    if args.quantile is not None:
        base["quantile"] = args.quantile
    if args.n_boot is not None:
        base["n_boot"] = args.n_boot
    if args.methods is not None:
        base["methods"] = args.methods
    if args.heldout is not None:
        base["heldout"] = args.heldout == "yes"
    return base


def _language(args: argparse.Namespace, cache: Path):
    import importlib

    try:
        mod = importlib.import_module("neurocert.dissect.demos.language")
    except ModuleNotFoundError as exc:
        if exc.name != "neurocert.dissect.demos.language":
            raise
        raise ValidationError(
            "the language demo is not available in this version "
            "(neurocert.dissect.demos.language is missing); run --demo vision") from None
    vision_only = [f"--{k.replace('_', '-')}" for k in ("broden", "images", "labels_csv",
                                                         "n_images", "quantile", "methods",
                                                         "scheduler")
                   if getattr(args, k) is not None]
    if args.backend != "memory":
        vision_only.append("--backend")
    if vision_only:
        raise ValidationError(f"{', '.join(vision_only)} apply to --demo vision only")
    options: dict = {"cache_dir": cache / "activations"}
    if args.heldout is not None:
        options["held_out"] = args.heldout == "yes"
    if args.n_boot is not None:
        options["n_boot"] = args.n_boot
    if args.layers is not None:
        try:
            options["layers"] = tuple(int(x) for x in str(args.layers).split(",") if x.strip())
        except ValueError:
            raise ValidationError(
                f"--layers for --demo language are MiniLM layer numbers, e.g. '1,3,5'; "
                f"got {args.layers!r}") from None
    if args.full:
        options["full"] = True
    return mod.run(args.out, seed=0 if args.seed is None else args.seed,
                   progress_bar=not args.no_progress, **options)


@register("dissect", help="label every unit of real network layers with NetDissect and soft-WPMI, "
                          "with certified IoU limits and bootstrap explanation sets "
                          "(the vision demo by default)", add_arguments=_arguments)
def _run_dissect(args: argparse.Namespace) -> int:
    import time

    from ..dissect.demos._common import format_table

    cache = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:5.0f}s] {msg}", file=sys.stderr, flush=True)

    if args.rows < 0:
        raise ValidationError(f"--rows must be >= 0; got {args.rows}")
    if args.demo == "language":
        res = _language(args, cache)
        rows = list(res.summary_rows)
        if rows and args.rows:
            cols = [c for c in ("layer", "method", "unit", "label", "similarity", "lower",
                                "upper", "be_set", "certified_set") if c in rows[0]]
            print(format_table(rows, cols))
        _print_outputs(args.out, res)
        return 0
    if args.labels_csv is not None and args.images is None:
        raise ValidationError("--labels-csv needs --images")
    from ..dissect.demos import vision

    opts = _options(args)
    if args.scheduler is not None and args.backend != "dask":
        raise ValidationError("--scheduler needs --backend dask")
    with _cluster(args) as client:
        res = vision.run(args.out, seed=0 if args.seed is None else args.seed,
                         progress_bar=not args.no_progress, cache_dir=cache,
                         data_dir=cache / "data", broden=args.broden, images=args.images,
                         labels_csv=args.labels_csv, log=log, backend=args.backend,
                         client=client, **opts)
    _print_vision(res, rows=args.rows)
    _print_outputs(args.out, res)
    return 0


def _cluster(args: argparse.Namespace):
    """One Dask client for the whole run (``--scheduler`` or a local cluster), else None."""
    import contextlib

    from .._backend import dask_client
    from .._optional import require

    if args.backend == "dask" and args.scheduler is not None:
        distributed = require("distributed", "--backend dask")
        return contextlib.closing(distributed.Client(args.scheduler))
    return dask_client(args.backend, None)


def _print_vision(res, *, rows: int) -> None:
    from ..dissect.demos._common import format_table

    p = res.parameters
    print(f"EfficientNet-Lite0 on {p['probing_set']['source']} ({p['n_images']} images), "
          f"NetDissect quantile {p['quantile']:g}, B = {p['n_boot']}, seed {p['seed']}")
    for method in p["methods"]:
        if not rows:
            break
        print(f"\n{res.parameters['method_titles'][method]}: top {rows} units per layer")
        print(res.summary_table(method=method, rows_per_layer=rows))
    print("\nper layer (certified: lower IoU limit > 0.04, delta = "
          f"{p['delta']:g} per unit, multiplicity none)")
    table = []
    for layer, by_method in res.statistics.get("layers", {}).items():
        for m, s in by_method.items():
            table.append({"layer": layer, "method": m, "units": s["units"],
                          "certified": (f"{s['certified']} ({100 * s['certified_share']:.0f}%)"
                                        if "certified" in s else "no bound"),
                          "mean BE set": s["mean_set_size"],
                          "singleton BE": f"{100 * s['singleton_share']:.0f}%",
                          "mean split set": s.get("mean_split_set_size", float("nan")),
                          "distinct labels": s["distinct_labels"]})
    print(format_table(table, ("layer", "method", "units", "certified", "mean BE set",
                               "singleton BE", "mean split set", "distinct labels")))
    for layer, ref in res.statistics.get("reference", {}).items():
        proj = ref.get("projection", {})
        lo_n, hi_n = proj.get("images_no_band"), proj.get("images")
        need = ""
        if lo_n:
            need = (f"; its best unit would need about {lo_n:,} images "
                    + (f"(up to {hi_n:,} with the threshold's uncertainty)" if hi_n else
                       "or more (the threshold's uncertainty alone keeps it uncertified far "
                       "beyond that)"))
        print(f"NetDissect's quantile {ref['quantile']:g} on {layer}: {ref['certified']} of "
              f"{ref['units']} certified ({ref['detectors']} with IoU >= 0.04, max lower limit "
              f"{ref['max_lower']:.3f}){need}")
    held = res.statistics.get("heldout", {})
    for layer, h in held.items():
        for m in ("netdissect", "soft_wpmi_gt"):
            if m in h:
                s = h[m]
                parts = [f"BE set holds the other half's label {100 * s['bootstrap_contains']:.0f}%"]
                if s.get("split_contains") == s.get("split_contains"):
                    parts.append(f"split set {100 * s['split_contains']:.0f}%")
                if s.get("interval_holds") == s.get("interval_holds"):
                    parts.append(f"IoU interval holds {100 * s['interval_holds']:.0f}%")
                print(f"held-out {layer} {m}: " + ", ".join(parts))
    f5 = res.statistics.get("figure5")
    if f5:
        nd, gt = f5["per_method"]["netdissect"], f5["per_method"]["soft_wpmi_gt"]
        print(f"Figure 5 (NetDissect vs soft-WPMI on ground-truth P): mean set size "
              f"{nd['mean_set_size']:.2f} vs {gt['mean_set_size']:.2f}, entropy "
              f"{nd['mean_entropy']:.2f} vs {gt['mean_entropy']:.2f}, distinct labels "
              f"{nd['distinct_labels']} vs {gt['distinct_labels']}: the paper's observation is "
              f"{f5['verdict']} here (no CLIP weights: not a test of CLIP-Dissect)")
    t = res.timings
    print("wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in t.items()
                                    if not k.startswith("cpu_")))
    cpu = {k[4:]: v for k, v in t.items() if k.startswith("cpu_")}
    if cpu:
        print("CPU time (all threads): " + ", ".join(f"{k} {v:.0f}s" for k, v in cpu.items()))


def _print_outputs(out: Path, res) -> None:
    files = getattr(res, "files", {}) or {}
    for name, path in files.items():
        print(f"{name}: {path}")
    if not files:
        print(f"outputs: {out}")
