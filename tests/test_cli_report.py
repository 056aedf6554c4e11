"""`neurocert report` and `neurocert bound`; the example config; docs/cli.md covers every option."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

import neurocert
from neurocert.cli import REGISTRY, _parse, _subparsers, build_parser, main
from neurocert.report import LayerResults
from neurocert.simulate import planted_layer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "neurocert.toml"
DOCS = ROOT / "docs" / "cli.md"

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    lay = planted_layer(2000, 8, 6, concept_freq=0.15, n_planted=6, rng=0)
    names = [f"c{i}" for i in range(6)]
    names[1] = "<script>"
    expl = neurocert.bootstrap_explain(lay.activations, lay.concepts, metric="auroc", n_boot=80,
                                       rng=1, concept_names=names)
    iou = neurocert.identify(lay.activations, lay.concepts, metric="iou", top_frac=0.05,
                             concept_names=names)
    expl.save(tmp / "auroc")
    iou.save(tmp / "iou")
    return tmp, expl, iou


def test_report_writes_html_table_and_saved_layer(saved, capsys):
    tmp, expl, iou = saved
    out = tmp / "r" / "report.html"
    code = main(["report", str(tmp / "auroc"), f"wpmi_like={tmp / 'iou'}", "--out", str(out),
                 "--table", str(tmp / "t.csv"), "--save", str(tmp / "layer")])
    assert code == 0
    text = capsys.readouterr().out
    assert "auroc:" in text and "wpmi_like:" in text and "report:" in text
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "&lt;script&gt;" not in html.split("<main>")[0]
    layer = LayerResults.load(tmp / "layer")
    ref = LayerResults.from_results({"auroc": expl, "wpmi_like": iou})
    # loaded from disk == built in memory (same certification: multiplicity none)
    assert layer.pairs.keys() == ref.pairs.keys()
    for k in ref.pairs:
        a, b = layer.pairs[k], ref.pairs[k]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), k
    pd = pytest.importorskip("pandas")
    assert len(pd.read_csv(tmp / "t.csv")) == len(ref.pairs["method"])
    # a saved layer is a valid report input on its own, with a neuron selection
    code = main(["report", str(tmp / "layer"), "--neurons", "2,5", "--out", str(tmp / "s.html")])
    assert code == 0
    assert '"neurons":["2","5"]' in (tmp / "s.html").read_text()


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_report_other_schema_version_is_one_line_error(saved, capsys, tmp_path):
    _, expl, _ = saved
    path = expl.save(tmp_path / "e")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 7
    (path / "manifest.json").write_text(json.dumps(manifest))
    err = _one_line_error(capsys, main(["report", str(path), "--out", str(tmp_path / "x.html")]))
    assert "schema_version 7" in err
    assert not (tmp_path / "x.html").exists()


def test_report_missing_column_is_one_line_error(saved, capsys, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    _, expl, _ = saved
    path = expl.save(tmp_path / "e")
    table = pq.read_table(path / "pairs.parquet").drop(["probability"])
    pq.write_table(table, path / "pairs.parquet")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tables"]["pairs"]["columns"].remove("probability")
    (path / "manifest.json").write_text(json.dumps(manifest))
    err = _one_line_error(capsys, main(["report", str(path), "--out", str(tmp_path / "x.html")]))
    assert "probability" in err and "lacks required column" in err


def test_report_unknown_neuron_and_bad_inputs(saved, capsys, tmp_path):
    tmp, _, _ = saved
    err = _one_line_error(capsys, main(["report", str(tmp / "auroc"), "--neurons", "3,nope",
                                        "--out", str(tmp_path / "x.html")]))
    assert "neuron 'nope' does not exist" in err
    err = _one_line_error(capsys, main(["report", str(tmp / "auroc"), "--multiplicity", "fdr",
                                        "--out", str(tmp_path / "x.html")]))
    assert "p-values" in err
    err = _one_line_error(capsys, main(["report", str(tmp_path / "missing"),
                                        "--out", str(tmp_path / "x.html")]))
    assert "not a neurocert results directory" in err
    err = _one_line_error(capsys, main(["report", str(tmp / "auroc"), "--out", "x.txt"]))
    assert ".html" in err
    assert not (tmp_path / "x.html").exists()


# --------------------------------------------------------------------------- #
# bound
# --------------------------------------------------------------------------- #

def test_bound_matches_library(capsys, tmp_path):
    code = main(["bound", "--metric", "recall", "--n", "1000,20000", "--concept-freq", "0.05,0.2",
                 "--neuron-freq", "0.1", "--out", str(tmp_path / "b.csv")])
    assert code == 0
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(tmp_path / "b.csv")
    assert len(df) == 4
    for row in df.itertuples():
        ref = neurocert.faithfulness_bound("recall", n=int(row.n), concept_freq=row.concept_freq,
                                           neuron_freq=0.1)
        assert row.radius == pytest.approx(ref, rel=1e-12)
    assert "with probability >= 0.95" in capsys.readouterr().out


def test_bound_planner_matches_library(capsys, tmp_path):
    code = main(["bound", "--metric", "auroc", "--epsilon", "0.1,0.05", "--concept-freq", "0.1",
                 "--target", "regret", "--out", str(tmp_path / "p.parquet")])
    assert code == 0
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(tmp_path / "p.parquet")
    for row in df.itertuples():
        assert row.n == neurocert.required_samples("auroc", row.epsilon, concept_freq=0.1,
                                                   target="regret")
    capsys.readouterr()
    err = _one_line_error(capsys, main(["bound", "--metric", "auroc", "--concept-freq", "0.1"]))
    assert "exactly one of --n" in err
    err = _one_line_error(capsys, main(["bound", "--metric", "iou", "--n", "100"]))
    assert "concept_freq" in err


# --------------------------------------------------------------------------- #
# Example configuration and documentation
# --------------------------------------------------------------------------- #

def _positionals(sp: argparse.ArgumentParser) -> list[str]:
    return ["placeholder" for a in sp._actions if not a.option_strings and a.dest != "help"]


def test_example_config_parses_for_every_subcommand():
    import tomllib

    config = tomllib.loads(EXAMPLE.read_text())
    parser = build_parser()
    subs = _subparsers(parser)
    missing = sorted(set(REGISTRY) - set(config))
    assert not missing, f"examples/neurocert.toml has no section for {missing}"
    for name, sp in subs.items():
        args = _parse(build_parser(), ["--config", str(EXAMPLE), name, *_positionals(sp)])
        assert args.command == name
        for key, value in config[name].items():
            dest = key.replace("-", "_")
            got = getattr(args, dest)
            action = next(a for a in sp._actions if a.dest == dest)
            expected = value if action.nargs == 0 else (
                action.type(str(value)) if callable(action.type) else str(value))
            assert got == expected, (name, key, got, expected)
        assert args.seed == config["seed"]


def test_command_line_wins_over_example_config():
    sp = _subparsers(build_parser())["report"]
    args = _parse(build_parser(), ["--config", str(EXAMPLE), "report", *_positionals(sp),
                                   "--top-k", "9"])
    assert args.top_k == 9 and args.max_concepts == 12


def _doc_sections() -> dict[str, str]:
    text = DOCS.read_text()
    parts = re.split(r"^## `neurocert (\S+)`\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_docs_cover_every_subcommand_and_option():
    sections = _doc_sections()
    for name, sp in _subparsers(build_parser()).items():
        assert name in sections, f"docs/cli.md has no section for `neurocert {name}`"
        for action in sp._actions:
            longs = [s for s in action.option_strings if s.startswith("--")]
            if longs and action.dest not in ("help", "seed", "config", "debug", "no_progress"):
                assert f"`{longs[-1]}" in sections[name], (name, longs[-1])


def test_help_of_every_subcommand(capsys):
    for name in REGISTRY:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert REGISTRY[name].help.split()[0] in capsys.readouterr().out
