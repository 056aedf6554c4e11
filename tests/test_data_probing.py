"""Image folders, arrays and text corpora as sample-level probing sets."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from neurocert.data.arrays import load_arrays
from neurocert.data.images import SkippedImageWarning, load_image_folder
from neurocert.data.probing import ProbingSet, multi_hot
from neurocert.data.text import load_text_corpus, load_token_corpus
from neurocert.exceptions import ValidationError

PIL = pytest.importorskip("PIL")
from PIL import Image


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def class_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    expected = {}
    for c, n in (("dog", 2), ("cat", 3)):
        for k in range(n):
            a = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            _png(root / c / f"{k}.png", a)
            expected[f"{c}/{k}.png"] = (a, c)
    (root / "cat" / "notes.txt").write_text("not an image, ignored by extension")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
    (root / "cat" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return root, expected


def test_class_folders_skip_and_count_corrupt(class_folder):
    root, expected = class_folder
    with pytest.warns(SkippedImageWarning, match="2 of 7 images"):
        ps = load_image_folder(root)
    assert ps.n_skipped == 2
    assert sorted(s for s, _ in ps.skipped) == ["cat/cut.jpg", "dog/broken.png"]
    assert ps.concept_names == ("cat", "dog")
    assert isinstance(ps.samples, np.ndarray) and ps.samples.shape == (5, 6, 5, 3)
    for k, rid in enumerate(ps.ids):
        a, c = expected[rid]
        np.testing.assert_array_equal(ps.samples[k], a)
        assert ps.concepts[k].tolist() == [c == "cat", c == "dog"]


def test_strict_raises(class_folder):
    root, _ = class_folder
    with pytest.raises(ValidationError, match=r"cannot be read.*strict=True"):
        load_image_folder(root, strict=True)


def test_resize_and_flat_csv(tmp_path):
    rng = np.random.default_rng(1)
    arrs = [rng.integers(0, 256, (4 + k, 7, 3), dtype=np.uint8) for k in range(3)]
    for k, a in enumerate(arrs):
        _png(tmp_path / f"f{k}.png", a)
    (tmp_path / "labels.csv").write_text("filename,labels\nf0.png,red;round\nf1.png,\nf2.png,round\n")
    ps = load_image_folder(tmp_path, labels_csv=tmp_path / "labels.csv")
    assert isinstance(ps.samples, list) and [s.shape for s in ps.samples] == [a.shape for a in arrs]
    assert ps.concept_names == ("red", "round")
    assert ps.concepts.astype(int).tolist() == [[1, 1], [0, 0], [0, 1]]
    small = load_image_folder(tmp_path, labels_csv=tmp_path / "labels.csv", size=(3, 2))
    assert small.samples.shape == (3, 3, 2, 3)
    ref = np.asarray(Image.fromarray(arrs[1]).resize((2, 3), Image.BILINEAR))
    np.testing.assert_array_equal(small.samples[1], ref)
    (tmp_path / "bad.csv").write_text("name,label\nf0.png,x\n")
    with pytest.raises(ValidationError, match="file column"):
        load_image_folder(tmp_path, labels_csv=tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text("image,label\nnope.png,x\nf0.png,y\n")
    with pytest.warns(SkippedImageWarning):
        ps = load_image_folder(tmp_path, labels_csv=tmp_path / "missing.csv")
    assert ps.n_skipped == 1 and ps.concept_names == ("y",)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        load_image_folder(tmp_path / "none")
    with pytest.raises(ValidationError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"junk")
    with pytest.warns(SkippedImageWarning), pytest.raises(ValidationError, match="none of the 1 images"):
        load_image_folder(tmp_path)
    with pytest.raises(ValidationError, match="`size`"):
        load_image_folder(tmp_path, size=0)


def test_multi_hot():
    c, names = multi_hot([["b", "a"], "c", [], None])
    assert names == ("a", "b", "c")
    assert c.astype(int).tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]
    c, _ = multi_hot([[2, 0]], concept_names=["x", "y", "z"])
    assert c.tolist() == [[True, False, True]]
    with pytest.raises(ValidationError, match="not in `concept_names`"):
        multi_hot([["q"]], concept_names=["x"])
    with pytest.raises(ValidationError, match="concept_names"):
        multi_hot([[1]])
    with pytest.raises(ValidationError, match=r"index 3 is not in \[0, 1\)"):
        multi_hot([[3]], concept_names=["x"])


def test_text_corpus_strings_and_jsonl(tmp_path):
    ps = load_text_corpus(["a dog", "a cat", "nothing"], [["dog", "animal"], ["cat", "animal"], []])
    assert ps.samples == ["a dog", "a cat", "nothing"]
    assert ps.concept_names == ("animal", "cat", "dog")
    assert ps.concepts.astype(int).tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    m = np.array([[1, 0], [0, 1], [0, 0]])
    pm = load_text_corpus(["x", "y", "z"], m, concept_names=["p", "q"])
    np.testing.assert_array_equal(pm.concepts, m.astype(bool))
    with pytest.raises(ValidationError, match="2 entries but there are 3"):
        load_text_corpus(["x", "y", "z"], [["a"], ["b"]])
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"text": "one", "labels": ["a"], "doc": "d1"},
        {"text": "two", "labels": [], "doc": "d2"},
        {"text": "three", "labels": ["b", "a"], "doc": "d1"},
    ]) + "\n\n")
    pj = load_text_corpus(p, group_key="doc")
    assert pj.samples == ["one", "two", "three"] and pj.concept_names == ("a", "b")
    assert pj.groups.tolist() == [0, 1, 0] and pj.ids == ("1", "2", "3")
    p.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(ValidationError, match="line 2: expected a JSON object"):
        load_text_corpus(p)
    p.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(ValidationError, match="record 2: needs a string field 'text'"):
        load_text_corpus(p)
    p.write_text('{"text": "ok"\n')
    with pytest.raises(ValidationError, match="line 1: not valid JSON"):
        load_text_corpus(p)


def test_token_corpus(tmp_path):
    recs = [
        {"text": "The dog  barked.", "tokens": ["The", "dog", "barked", "."],
         "labels": [["DET"], ["NOUN", "animal"], "VERB", None]},
        {"tokens": ["Cats", "sleep"], "labels": [["NOUN", "animal"], ["VERB"]]},
    ]
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs))
    ts = load_token_corpus(p)
    assert ts.tokens == ["The", "dog", "barked", ".", "Cats", "sleep"]
    assert ts.texts == ["The dog  barked.", "Cats sleep"]
    assert ts.groups.tolist() == [0, 0, 0, 0, 1, 1]
    for (a, b), tok, g in zip(ts.spans, ts.tokens, ts.groups, strict=True):
        assert ts.texts[g][a:b] == tok
    assert ts.spans[2].tolist() == [9, 15]
    assert ts.concept_names == ("DET", "NOUN", "VERB", "animal")
    assert ts.concepts.astype(int).tolist() == [
        [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    assert ts.sentence_concepts().astype(int).tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    with pytest.raises(ValidationError, match="one entry per token"):
        load_token_corpus([{"tokens": ["a", "b"], "labels": [[]]}])
    with pytest.raises(ValidationError, match="token 'b' not found"):
        load_token_corpus([{"text": "b a", "tokens": ["a", "b"], "labels": [[], []]}])


def test_arrays(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    y = np.array([2, 0, 1, 2])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "names.txt").write_text("zero\none\ntwo\n")
    ps = load_arrays(tmp_path / "x.npy", tmp_path / "y.npy", concept_names=tmp_path / "names.txt")
    np.testing.assert_array_equal(ps.samples, x)
    assert ps.concept_names == ("zero", "one", "two")
    np.testing.assert_array_equal(ps.concepts.argmax(1), y)
    assert ps.concepts.sum() == 4
    c = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], np.uint8)
    np.savez(tmp_path / "b.npz", samples=x, concepts=c, concept_names=np.array(["a", "b"]),
             groups=np.array([0, 0, 1, 1]))
    pb = load_arrays(tmp_path / "b.npz")
    np.testing.assert_array_equal(pb.concepts, c.astype(bool))
    assert pb.concept_names == ("a", "b") and pb.groups.tolist() == [0, 0, 1, 1]
    np.savez(tmp_path / "bad.npz", samples=x, concepts=c[:3])
    with pytest.raises(ValidationError, match="3 samples \\(axis 0\\) but `samples` has 4"):
        load_arrays(tmp_path / "bad.npz")
    np.savez(tmp_path / "nc.npz", samples=x)
    with pytest.raises(ValidationError, match="no concept labels"):
        load_arrays(tmp_path / "nc.npz")
    np.save(tmp_path / "c2.npy", np.full((4, 2), 2))
    with pytest.raises(ValidationError, match="0/1"):
        load_arrays(tmp_path / "x.npy", tmp_path / "c2.npy")
    with pytest.raises(ValidationError, match="does not exist"):
        load_arrays(tmp_path / "none.npz")


def test_probing_set_validation():
    with pytest.raises(ValidationError, match="shape \\(2, n_concepts\\)"):
        ProbingSet(samples=["a", "b"], concepts=np.zeros((3, 1)), concept_names=("c",))
    with pytest.raises(ValidationError, match="1 names but `concepts` has 2"):
        ProbingSet(samples=["a"], concepts=np.zeros((1, 2)), concept_names=("c",))
    with pytest.raises(ValidationError, match="groups"):
        ProbingSet(samples=["a"], concepts=np.zeros((1, 1)), concept_names=("c",), groups=[0.5])
