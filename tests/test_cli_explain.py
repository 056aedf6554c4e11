"""`neurocert explain`: bootstrap ensembles from array files."""

from __future__ import annotations

import numpy as np
import pytest

import neurocert
from neurocert.cli import main


@pytest.fixture()
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    z = (rng.random((1500, 6)) < 0.2).astype(float)
    a = 1.0 * z[:, :4] + rng.normal(size=(1500, 4))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "z.npy", z)
    return tmp_path, a, z


def test_explain_matches_library_and_is_loadable(arrays, capsys):
    tmp, a, z = arrays
    code = main(["--seed", "5", "--no-progress", "explain", str(tmp / "a.npy"), str(tmp / "z.npy"),
                 "--metric", "auroc", "--n-boot", "120", "--out", str(tmp / "res")])
    assert code == 0
    out = capsys.readouterr().out
    assert "BE set" in out and "coverage target" in out
    loaded = neurocert.ExplanationResult.load(tmp / "res")
    direct = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=120, rng=5, mode="both")
    np.testing.assert_array_equal(loaded.probabilities, direct.probabilities)
    assert [s.tolist() for s in loaded.prediction_sets] == [s.tolist() for s in direct.prediction_sets]
    assert [s.tolist() for s in loaded.split_sets] == [s.tolist() for s in direct.split_sets]
    assert not (tmp / ".res.checkpoint.npz").exists()


def test_explain_bad_alpha_is_one_line_error(arrays, capsys):
    tmp, _, _ = arrays
    code = main(["explain", str(tmp / "a.npy"), str(tmp / "z.npy"), "--metric", "auroc",
                 "--alpha", "1.5", "--out", str(tmp / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: `alpha`")
