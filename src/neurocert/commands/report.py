"""``neurocert report``: the tidy table and the HTML report from saved results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import register
from ..exceptions import ValidationError


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="results directories written by identify, explain, dissect or "
                        "report --save; NAME=DIR names a method (default: the directory name). "
                        "Several directories describe one layer with several methods")
    p.add_argument("--out", type=Path, default=Path("report.html"), metavar="FILE.html",
                   help="the HTML report (default: ./report.html)")
    p.add_argument("--table", type=Path, default=None, metavar="FILE",
                   help="also write the tidy (neuron, concept) table: .parquet or .csv")
    p.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="also save the combined results (tables + manifest) as a directory")
    p.add_argument("--neurons", default=None, metavar="LIST",
                   help="only these neurons: comma-separated names or indices, e.g. '3,17,conv5_9'")
    p.add_argument("--level", type=float, default=None,
                   help="certify labels whose lower limit exceeds this (default: 0.5 for auroc "
                        "and balanced_accuracy, 0.04 for iou, else 0)")
    p.add_argument("--multiplicity", choices=("none", "fwer", "fdr"), default="none",
                   help="correction over neurons (default: none; fwer and fdr need the probing "
                        "data, so they apply to results combined by dissect or in Python)")
    p.add_argument("--top-k", type=int, default=5, metavar="K",
                   help="concepts by similarity kept in the table besides the set members "
                        "(default: 5)")
    p.add_argument("--max-concepts", type=int, default=12, metavar="N",
                   help="concept rows drawn on each neuron's card (default: 12)")
    p.add_argument("--title", default=None, help="report title")


def _split_results(items: list[str]) -> list[tuple[str | None, Path]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if sep and name and not Path(item).exists():
            out.append((name, Path(path)))
        else:
            out.append((None, Path(item)))
    return out


@register("report", help="the tidy table and a self-contained HTML report from saved results",
          add_arguments=_arguments)
def _run_report(args: argparse.Namespace) -> int:
    from ..report import LayerResults, load_result, write_report

    if args.out.suffix.lower() not in (".html", ".htm"):
        raise ValidationError(f"--out {str(args.out)!r} must end in .html")
    if args.table is not None and args.table.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ValidationError(f"--table {str(args.table)!r} must end in .parquet or .csv")
    loaded = [(name, path, load_result(path)) for name, path in _split_results(args.results)]
    layers = [r for _, _, r in loaded if isinstance(r, LayerResults)]
    if layers and len(loaded) > 1:
        raise ValidationError(
            "a saved report directory (report --save / dissect) cannot be combined with other "
            "results; give it alone")
    if layers:
        layer = layers[0]
        if args.level is not None or args.multiplicity != "none":
            raise ValidationError(
                f"{str(loaded[0][1])!r} was certified already (level and multiplicity are "
                "stored); --level and --multiplicity apply to identify/explain results")
    else:
        named: dict[str, object] = {}
        for name, path, res in loaded:
            key = name or path.resolve().name
            if key in named:
                raise ValidationError(
                    f"two results are named {key!r}; name them with NAME=DIR")
            named[key] = res
        layer = LayerResults.from_results(named, level=args.level,
                                          multiplicity=args.multiplicity, top_k=args.top_k)
    if args.neurons is not None:
        wanted = [x.strip() for x in str(args.neurons).split(",") if x.strip()]
        layer = layer.select(wanted)
    path = write_report(layer, args.out, title=args.title, max_concepts=args.max_concepts)
    for m in layer.methods:
        print(f"{m.name}: {m.statement()}")
    if args.table is not None:
        layer.write_table(args.table)
        print(f"table: {args.table} ({len(layer.pairs['method'])} rows)")
    if args.save is not None:
        layer.save(args.save)
        print(f"results: {args.save}")
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB, {layer.n_neurons} neurons)")
    return 0
