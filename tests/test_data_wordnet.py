"""WordNet 3.0 reader: a hand-written data file, and the Debian package."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import require_asset

from neurocert.data.wordnet import (
    LEXNAMES,
    load_wordnet,
    read_synsets,
    wordnet_available,
)
from neurocert.exceptions import ValidationError

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
NOUN = (HEADER
        + "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member of the "
          'genus Canis; occurs in many breeds; "the dog barked all night"  \n'
        + "07555863 13 n 01 food 0 000 | any substance that can be metabolized  \n")
VERB = (HEADER
        + "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 001 * 00005041 v 0000 02 + 02 00 "
          '+ 08 00 | draw air into, and expel out of, the lungs; "I can breathe better"; "The patient is '
          'respiring"  \n')
ADJ = HEADER + '00002312 00 a 02 abaxial 0 dorsal(a) 4 000 | facing away from the axis; "the abaxial surface"  \n'


@pytest.fixture()
def wn_dir(tmp_path):
    for pos, text in (("noun", NOUN), ("verb", VERB), ("adj", ADJ), ("adv", HEADER)):
        (tmp_path / f"data.{pos}").write_text(text)
    return tmp_path


def test_parse_hand_written_files(wn_dir):
    ss = read_synsets(wn_dir)
    assert [s.offset for s in ss] == [2084071, 7555863, 1740, 2312]
    dog = ss[0]
    assert dog.lexname == "noun.animal" and dog.pos == "n"
    assert dog.words == ("dog", "domestic dog", "Canis familiaris")
    assert dog.definition == "a member of the genus Canis; occurs in many breeds"
    assert dog.examples == ("the dog barked all night",)
    assert ss[1].examples == () and ss[1].lexname == "noun.food"
    assert ss[2].lexname == "verb.body" and ss[2].examples == ("I can breathe better", "The patient is respiring")
    assert ss[3].words == ("abaxial", "dorsal") and ss[3].lexname == "adj.all"


def test_corpus_labels_and_groups(wn_dir):
    ps = load_wordnet(wn_dir)
    assert ps.concept_names == LEXNAMES and len(LEXNAMES) == 45
    assert ps.samples[:3] == ["a member of the genus Canis; occurs in many breeds", "the dog barked all night",
                              "any substance that can be metabolized"]
    assert ps.groups.tolist() == [0, 0, 1, 2, 2, 2, 3, 3]
    labels = [ps.concept_names[k] for k in ps.concepts.argmax(1)]
    assert labels == ["noun.animal"] * 2 + ["noun.food"] + ["verb.body"] * 3 + ["adj.all"] * 2
    assert (ps.concepts.sum(1) == 1).all()
    assert ps.ids[1] == "n02084071:example1"
    only = load_wordnet(wn_dir, pos=["noun"], texts=["definition"], with_words=True)
    assert only.samples[0].startswith("dog, domestic dog, Canis familiaris: a member")
    assert len(only) == 2


def test_errors(wn_dir, tmp_path):
    with pytest.raises(ValidationError, match="apt-get install wordnet-base"):
        read_synsets(tmp_path / "none")
    with pytest.raises(ValidationError, match="`pos`"):
        read_synsets(wn_dir, pos=["nouns"])
    (wn_dir / "data.adv").write_text("00001 77 r 01 x 0 000 | y\n")
    with pytest.raises(ValidationError, match="line 1: lexicographer file number 77"):
        read_synsets(wn_dir)
    (wn_dir / "data.adv").write_text("garbage\n")
    with pytest.raises(ValidationError, match="malformed"):
        read_synsets(wn_dir)
    with pytest.raises(ValidationError, match="`texts`"):
        load_wordnet(wn_dir, texts=["glosses"])


def test_debian_wordnet():
    require_asset(wordnet_available(), "Debian package wordnet-base")
    ss = read_synsets()
    assert len(ss) == 117659  # WordNet 3.0
    assert sum(1 for s in ss if s.examples) == 32923
    man = Path("/usr/share/man/man5/lexnames.5WN.gz")
    if man.is_file():  # the built-in list agrees with the package's own documentation
        rows = _lexnames_doc(man)
        assert tuple(name for _, name in rows) == LEXNAMES
    dog = next(s for s in ss if s.pos == "n" and s.offset == 2084071)
    assert dog.lexname == "noun.animal" and "dog" in dog.words
    counts = np.bincount([LEXNAMES.index(s.lexname) for s in ss], minlength=45)
    assert (counts > 0).all()


def _lexnames_doc(man: Path) -> list[tuple[str, str]]:
    with gzip.open(man, "rt") as fh:
        return re.findall(r"^(\d\d)\t(\S+)", fh.read(), flags=re.MULTILINE)
