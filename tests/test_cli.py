"""Tests of the command line (neurocert.cli), the demo job and the README quickstart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neurocert
from neurocert import cli
from neurocert.demo import default_level, run_demo
from neurocert.identify import IdentificationResult
from neurocert.results import array_sha256
from neurocert.simulate import planted_layer

ROOT = Path(__file__).resolve().parents[1]
SMALL_DEMO = ["--n-samples", "3000", "--n-neurons", "8", "--n-concepts", "5"]


def run(argv, capsys):
    """main(argv) in-process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def layer():
    return planted_layer(2000, 6, 4, concept_freq=[0.3, 0.2, 0.1, 0.05],
                         separation=[2.0, 1.5, 1.0, 2.0, 0.5, 0.0], n_planted=5, rng=1)


def write_array(path: Path, a: np.ndarray, fmt: str) -> None:
    """Write one 2-D float array in the given format (csv with a header row)."""
    if fmt == "npy":
        np.save(path, a)
    elif fmt == "npz":
        np.savez(path, only=a)
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table({f"col{j}": a[:, j] for j in range(a.shape[1])}), path)
    else:
        header = ",".join(f"col{j}" for j in range(a.shape[1]))
        np.savetxt(path, a, delimiter=",", header=header, comments="", fmt="%.17g")


@pytest.fixture(params=["npy", "npz", "parquet", "csv"])
def inputs(request, layer, tmp_path):
    fmt = request.param
    a_path, c_path = tmp_path / f"acts.{fmt}", tmp_path / f"concepts.{fmt}"
    write_array(a_path, layer.activations, fmt)
    write_array(c_path, layer.concepts, fmt)
    return a_path, c_path


# --------------------------------------------------------------------------- registry, parser

def test_registry_and_help(capsys):
    assert {"demo", "similarity", "identify"} <= set(cli.REGISTRY)
    for cmd in cli.REGISTRY.values():
        assert cmd.help and callable(cmd.add_arguments) and callable(cmd.run)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "identify" in out and "--config" in out


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        cli.register("demo", help="x", add_arguments=lambda p: None)(lambda args: 0)


def test_registered_subcommand_runs(capsys):
    def add(p):
        p.add_argument("--word", default="hi")

    @cli.register("echo-test", help="test only", add_arguments=add)
    def _echo(args):
        print(args.word, args.seed)
        return 3

    try:
        code, out, _ = run(["--seed", "4", "echo-test", "--word", "yo"], capsys)
        assert (code, out.strip()) == (3, "yo 4")
        code, out, _ = run(["echo-test", "--seed", "5"], capsys)
        assert (code, out.strip()) == (3, "hi 5")
    finally:
        del cli.REGISTRY["echo-test"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"neurocert {neurocert.__version__}"


def test_usage_errors_exit_2(capsys, tmp_path):
    for argv in (["nope"], [], ["identify", "a.npy"], ["demo", "--n-samples", "many"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    # a required option missing from both the command line and the config
    with pytest.raises(SystemExit) as exc:
        cli.main(["similarity", "a.npy", "c.npy", "--out", str(tmp_path / "s.npy")])
    assert exc.value.code == 2
    assert "--metric" in capsys.readouterr().err


# --------------------------------------------------------------------------- demo

def test_demo_writes_loadable_result(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code, out, err = run(["demo", "--out", out_dir, "--no-progress", *SMALL_DEMO], capsys)
    assert code == 0, err
    assert re.search(r"neuron\s+planted\s+label\s+similarity\s+\[lower, upper\]\s+null\s+"
                     r"set size\s+regret\s+certified", out)
    assert "neurons have a certified label" in out
    assert "label = planted concept for" in out
    assert "metric=auroc" in out and "level=0.5" in out and "seed=0" in out
    table_rows = [line for line in out.splitlines() if re.match(r"n\d+\s", line)]
    assert len(table_rows) == 8
    res = IdentificationResult.load(out_dir)
    assert res.n_neurons == 8 and res.n_concepts == 5 and res.metric == "auroc"
    assert res.parameters["demo"]["n_samples"] == 3000
    assert res.parameters["demo"]["planted"][-2:] == [-1, -1]  # 20% noise neurons


def test_run_demo_default_mix():
    """The defaults give the informative mix the demo is for (and run fast)."""
    demo = run_demo()
    sizes = np.array([len(s) for s in demo.result.certified_sets])
    cert = demo.summary.certified
    noise = demo.layer.planted < 0
    assert noise.sum() == 6
    assert np.any(cert & (sizes == 1))          # certified, singleton set
    assert np.any(cert & (sizes > 1))           # certified above chance, but not unique
    assert np.any(~cert & ~noise)               # planted but not certified
    assert not np.any(cert & noise)             # noise neurons are flagged
    assert demo.share_correct >= 0.9
    assert demo.path is None


def test_demo_count_metric_and_seed(tmp_path):
    demo = run_demo(metric="iou", n_samples=4000, n_neurons=6, n_concepts=4, seed=3,
                    out=tmp_path / "d", csv=True)
    assert demo.parameters["top_frac"] == 0.005 and demo.summary.level == 0.04
    assert (tmp_path / "d" / "neurons.csv").is_file()
    again = run_demo(metric="iou", n_samples=4000, n_neurons=6, n_concepts=4, seed=3)
    np.testing.assert_array_equal(demo.result.similarity, again.result.similarity)
    assert default_level("auroc") == 0.5 and default_level("precision") == 0.0


def test_demo_via_python_m(tmp_path):
    out_dir = tmp_path / "demo-sub"
    proc = subprocess.run(
        [sys.executable, "-m", "neurocert", "--seed", "3", "demo", "--out", str(out_dir),
         "--no-progress", *SMALL_DEMO],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "certified" in proc.stdout and "seed=3" in proc.stdout
    assert IdentificationResult.load(out_dir).n_neurons == 8


# --------------------------------------------------------------------------- similarity

def test_similarity_matches_library(inputs, layer, tmp_path, capsys):
    a_path, c_path = inputs
    out = tmp_path / "sim.npy"
    code, _, err = run(["similarity", a_path, c_path, "--metric", "auroc", "--out", out], capsys)
    assert code == 0, err
    expected = neurocert.similarity(layer.activations, layer.concepts, metric="auroc")
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-12)


def test_similarity_npz_keys(layer, tmp_path, capsys):
    path = tmp_path / "both.npz"
    np.savez(path, acts=layer.activations, concepts=layer.concepts)
    out = tmp_path / "s.npy"
    code, _, err = run(["similarity", path, path, "--key-activations", "acts", "--key-concepts",
                        "concepts", "--metric", "iou", "--top-frac", "0.1", "--out", out], capsys)
    assert code == 0, err
    expected = neurocert.similarity(layer.activations, layer.concepts, metric="iou", top_frac=0.1)
    np.testing.assert_array_equal(np.load(out), expected)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_similarity_tidy_table_with_weights_and_groups(suffix, layer, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    a_path, c_path = tmp_path / "a.npy", tmp_path / "c.npy"
    np.save(a_path, layer.activations)
    np.save(c_path, layer.concepts)
    n = layer.activations.shape[0]
    w = np.random.default_rng(0).integers(1, 4, n).astype(float)
    g = np.arange(n) // 4
    np.savetxt(tmp_path / "w.csv", w, header="weight", comments="")
    np.save(tmp_path / "g.npy", g)
    out = tmp_path / f"sim{suffix}"
    code, _, err = run(["similarity", a_path, c_path, "--metric", "f1", "--threshold", "1.0",
                        "--sample-weight", tmp_path / "w.csv", "--groups", tmp_path / "g.npy",
                        "--truth", "neuron", "--out", out], capsys)
    assert code == 0, err
    expected = neurocert.similarity(layer.activations, layer.concepts, metric="f1", threshold=1.0,
                                    sample_weight=w, groups=g, truth="neuron")
    df = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(df.columns) == ["neuron", "concept", "similarity"]
    assert len(df) == expected.size
    grid = np.full(expected.shape, np.nan)
    grid[df["neuron"].to_numpy(), df["concept"].to_numpy()] = df["similarity"].to_numpy()
    np.testing.assert_allclose(grid, expected, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- identify

def test_identify_matches_library(inputs, layer, tmp_path, capsys):
    a_path, c_path = inputs
    names = tmp_path / "concepts.txt"
    names.write_text("stripes\ndog\nsky\nwater\n")
    out_dir = tmp_path / "result"
    code, out, err = run(["identify", a_path, c_path, "--metric", "auroc", "--delta", "0.1",
                          "--concept-names", names, "--top-k", "3", "--out", out_dir], capsys)
    assert code == 0, err
    expected = neurocert.identify(layer.activations, layer.concepts, metric="auroc", delta=0.1,
                                  concept_names=["stripes", "dog", "sky", "water"], top_k=3)
    got = IdentificationResult.load(out_dir)
    assert got.labels == expected.labels
    np.testing.assert_allclose(got.similarity, expected.similarity, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.lower, expected.lower, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.upper, expected.upper, rtol=0, atol=1e-12)
    assert got.top.shape == (6, 3) and got.delta == 0.1
    # the printed table and summary
    assert "stripes" in out and "neurons have a certified label" in out
    assert "lower limit > 0.5" in out and "multiplicity=fdr" in out
    assert str(expected.summary(0.5, multiplicity="fdr")) in out
    # input hashes of the arrays as read, in the manifest
    manifest = json.loads((out_dir / "manifest.json").read_text())
    from neurocert.results import read_array_file

    assert manifest["input_hashes"]["activations"] == array_sha256(read_array_file(a_path))
    assert manifest["input_hashes"]["concepts"] == array_sha256(read_array_file(c_path))
    assert got.parameters["inputs"]["activations"] == str(a_path)


def test_identify_count_metric_names_rows_csv(layer, tmp_path, capsys):
    a_path, c_path = tmp_path / "a.npy", tmp_path / "c.npy"
    np.save(a_path, layer.activations)
    np.save(c_path, layer.concepts)
    (tmp_path / "neurons.csv").write_text("name\n" + "\n".join(f"unit{j}" for j in range(6)))
    out_dir = tmp_path / "r"
    code, out, err = run(["identify", a_path, c_path, "--metric", "iou", "--top-frac", "0.05",
                          "--neuron-names", tmp_path / "neurons.csv", "--rows", "2",
                          "--multiplicity", "none", "--level", "0.1", "--csv",
                          "--out", out_dir], capsys)
    assert code == 0, err
    assert "unit0" in out and "unit1" in out and "unit2" not in out
    assert "... 4 more neurons" in out and "lower limit > 0.1" in out
    assert (out_dir / "neurons.csv").is_file()
    expected = neurocert.identify(layer.activations, layer.concepts, metric="iou", top_frac=0.05)
    got = IdentificationResult.load(out_dir)
    np.testing.assert_allclose(got.lower, expected.lower, rtol=0, atol=1e-12)
    assert got.neuron_names == [f"unit{j}" for j in range(6)]


# --------------------------------------------------------------------------- config

def test_config_applies_and_flags_override(layer, tmp_path, capsys):
    a_path, c_path = tmp_path / "a.npy", tmp_path / "c.npy"
    np.save(a_path, layer.activations)
    np.save(c_path, layer.concepts)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('metric = "auroc"\nseed = 11\n\n[identify]\ndelta = 0.1\ntop-k = 2\n'
                   'multiplicity = "none"\n\n[demo]\nn_samples = 2500\nn-neurons = 5\n'
                   'n_concepts = 4\n')
    code, out, err = run(["identify", a_path, c_path, "--config", cfg, "--out",
                          tmp_path / "r1"], capsys)
    assert code == 0, err
    r1 = IdentificationResult.load(tmp_path / "r1")
    assert (r1.metric, r1.delta, r1.top.shape[1], r1.parameters["seed"]) == ("auroc", 0.1, 2, 11)
    assert "multiplicity=none" in out
    # explicit flags win, before or after the subcommand
    code, _, err = run(["--config", cfg, "--seed", "12", "identify", a_path, c_path,
                        "--delta", "0.2", "--metric", "f1", "--threshold", "0.5",
                        "--out", tmp_path / "r2"], capsys)
    assert code == 0, err
    r2 = IdentificationResult.load(tmp_path / "r2")
    assert (r2.metric, r2.delta, r2.top.shape[1], r2.parameters["seed"]) == ("f1", 0.2, 2, 12)
    # [demo] table and the top-level seed apply to the demo
    code, out, err = run(["demo", "--config", cfg, "--out", tmp_path / "d"], capsys)
    assert code == 0, err
    assert "2500 samples, 5 neurons" in out and "seed=11" in out


def test_config_exclusive_options_command_line_wins(layer, tmp_path, capsys):
    a_path, c_path = tmp_path / "a.npy", tmp_path / "c.npy"
    np.save(a_path, layer.activations)
    np.save(c_path, layer.concepts)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[similarity]\nmetric = "iou"\ntop_frac = 0.05\n')
    out = tmp_path / "s.npy"
    code, _, err = run(["similarity", a_path, c_path, "--config", cfg, "--out", out], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(out), neurocert.similarity(
        layer.activations, layer.concepts, metric="iou", top_frac=0.05))
    code, _, err = run(["similarity", a_path, c_path, "--config", cfg, "--threshold", "1",
                        "--out", out], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(out), neurocert.similarity(
        layer.activations, layer.concepts, metric="iou", threshold=1.0))


@pytest.mark.parametrize("text, match", [
    ("bogus = 1\n", "unknown option 'bogus'"),
    ("[identify]\nn_samples = 3\n", "unknown option 'n_samples'"),
    ("[nonsense]\nx = 1\n", "unknown section"),
    ("[demo]\nn_samples = \"many\"\n", "invalid value"),
    ("[demo]\nmultiplicity = \"all\"\n", "must be one of"),
    ("[demo]\ncsv = 1\n", "true or false"),
    ("metric = [\n", "not valid TOML"),
])
def test_config_errors(text, match, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    code, _, err = run(["demo", "--config", cfg, "--out", tmp_path / "d", *SMALL_DEMO], capsys)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and match in lines[0], err


def test_config_missing_file(tmp_path, capsys):
    code, _, err = run(["demo", "--config", tmp_path / "none.toml"], capsys)
    assert code == 1 and "does not exist" in error_lines(err)[0]


# --------------------------------------------------------------------------- errors

@pytest.fixture
def npy_inputs(layer, tmp_path):
    a_path, c_path = tmp_path / "a.npy", tmp_path / "c.npy"
    np.save(a_path, layer.activations)
    np.save(c_path, layer.concepts)
    return a_path, c_path


def test_error_nan_activations(layer, tmp_path, capsys):
    a = layer.activations.copy()
    a[3, 1] = np.nan
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "c.npy", layer.concepts)
    argv = ["identify", tmp_path / "a.npy", tmp_path / "c.npy", "--metric", "auroc",
            "--out", tmp_path / "r"]
    code, out, err = run(argv, capsys)
    assert code == 1
    assert err.splitlines() == error_lines(err)  # nothing but the one line
    assert len(error_lines(err)) == 1 and "non-finite" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    code, _, err = run([*argv, "--debug"], capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "ValidationError" in err
    assert len(error_lines(err)) == 1


def test_error_unknown_metric(npy_inputs, tmp_path, capsys):
    a_path, c_path = npy_inputs
    code, _, err = run(["similarity", a_path, c_path, "--metric", "nope",
                        "--out", tmp_path / "s.npy"], capsys)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and "unknown metric 'nope'" in lines[0] and "auroc" in lines[0]


def test_error_missing_file(npy_inputs, tmp_path, capsys):
    _, c_path = npy_inputs
    code, _, err = run(["identify", tmp_path / "missing.npy", c_path, "--metric", "auroc",
                        "--out", tmp_path / "r"], capsys)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and "missing.npy" in lines[0] and "does not exist" in lines[0]


def test_error_bad_inputs(npy_inputs, tmp_path, capsys):
    a_path, c_path = npy_inputs
    cases = [
        (["similarity", a_path, c_path, "--metric", "auroc", "--out", tmp_path / "s.txt"],
         "unsupported extension"),
        (["similarity", a_path, c_path, "--metric", "iou", "--out", tmp_path / "s.npy"],
         "needs a binarized neuron"),
        (["identify", a_path, c_path, "--metric", "auroc", "--delta", "2",
          "--out", tmp_path / "r"], "`delta` must lie in (0, 1)"),
        (["demo", "--n-samples", "0", "--out", tmp_path / "d"], "n_samples"),
    ]
    for argv, match in cases:
        code, _, err = run(argv, capsys)
        assert code == 1, argv
        lines = error_lines(err)
        assert len(lines) == 1 and match in lines[0], err


def test_warnings_are_one_line(layer, tmp_path, capsys):
    c = layer.concepts.copy()
    c[:, 2] = 0.0  # an absent concept: undefined similarities
    np.save(tmp_path / "a.npy", layer.activations)
    np.save(tmp_path / "c.npy", c)
    code, _, err = run(["similarity", tmp_path / "a.npy", tmp_path / "c.npy", "--metric",
                        "auroc", "--out", tmp_path / "s.npy"], capsys)
    assert code == 0
    warn = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warn) == 1 and "undefined" in warn[0]
    assert np.isnan(np.load(tmp_path / "s.npy")[:, 2]).all()


# --------------------------------------------------------------------------- README

def _readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_quickstart_runs(capsys):
    blocks = [b for b in _readme_blocks() if "neurocert.extract" not in b]
    assert len(blocks) == 2  # identification, then stability (continues the first)
    namespace = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "['stripes', 'dog', 'sky', 'sky']" in out
    assert "2 of 4 neurons have a certified label" in out
    assert "0 ['stripes'] 1.0" in out and "1 ['dog'] 1.0" in out
    assert "independent probing set of the same size" in out


def test_readme_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("##", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_ci_script_is_executable():
    script = ROOT / ".ci" / "run"
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    assert "set -euo pipefail" in text and "make test" in text


def test_readme_real_network_block_runs(tmp_path, monkeypatch, capsys):
    """The README's EfficientNet-Lite0 x broden-lite example runs as written."""
    from conftest import require_asset

    from neurocert.data.idx import load_fashion_mnist
    from neurocert.extract.models import efficientnet_lite0_available

    require_asset(efficientnet_lite0_available(), "EfficientNet-Lite0 (neurocert[vision])")
    try:
        load_fashion_mnist("test")
        have_fashion = True
    except Exception:
        have_fashion = False
    require_asset(have_fashion, "Debian dataset-fashion-mnist")
    blocks = [b for b in _readme_blocks() if "neurocert.extract" in b]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[")
    assert (tmp_path / ".neurocert-cache").is_dir()
