"""WordNet 3.0 glosses and example sentences labelled by supersense (lexicographer file).

Reads the ``data.{noun,verb,adj,adv}`` files of Debian's ``wordnet-base``
package directly (no NLTK). Each line of a data file is::

    offset lex_filenum ss_type w_cnt (word lex_id){w_cnt} p_cnt (pointer){p_cnt} [frames] | gloss

with ``w_cnt`` in hexadecimal; the gloss is a definition followed by
``; "example"`` sentences. ``lex_filenum`` indexes the 45 lexicographer files
(the supersenses) listed in ``lexnames(5WN)``; Debian does not ship the
``lexnames`` file itself, so the list is built in here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import ValidationError
from .probing import ProbingSet

__all__ = ["LEXNAMES", "WORDNET_DIR", "Synset", "load_wordnet", "read_synsets", "wordnet_available"]

#: Where Debian's ``wordnet-base`` installs the database.
WORDNET_DIR = Path("/usr/share/wordnet")

#: The 45 WordNet 3.0 lexicographer files (supersenses), by number (lexnames(5WN)).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)
_POS = ("noun", "verb", "adj", "adv")
_EXAMPLE = re.compile(r'"([^"]*)"')
_MARKER = re.compile(r"\([a-z]+\)$")


@dataclass(frozen=True)
class Synset:
    """One WordNet synset as read from a data file."""

    pos: str  # n, v, a, s or r
    offset: int
    lexname: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


def wordnet_available(root: str | os.PathLike[str] | None = None) -> bool:
    """Whether the four WordNet data files are under ``root`` (default :data:`WORDNET_DIR`)."""
    r = WORDNET_DIR if root is None else Path(root)
    return all((r / f"data.{p}").is_file() for p in _POS)


def _parse_line(line: str, where: str) -> Synset:
    head, sep, gloss = line.partition(" | ")
    if not sep:
        head, gloss = line.rstrip(" |\n"), ""
    f = head.split()
    try:
        offset, lexnum, ss_type, w_cnt = int(f[0]), int(f[1]), f[2], int(f[3], 16)
        words = tuple(_MARKER.sub("", f[4 + 2 * k]).replace("_", " ") for k in range(w_cnt))
    except (IndexError, ValueError):
        raise ValidationError(f"{where}: malformed synset line {line[:60]!r}") from None
    if not 0 <= lexnum < len(LEXNAMES):
        raise ValidationError(f"{where}: lexicographer file number {lexnum} is not in [0, {len(LEXNAMES)})")
    gloss = gloss.strip()
    q = gloss.find('"')
    definition = (gloss if q < 0 else gloss[:q]).strip().rstrip(";").strip()
    examples = tuple(e.strip() for e in _EXAMPLE.findall(gloss[q:] if q >= 0 else "") if e.strip())
    return Synset(ss_type, offset, LEXNAMES[lexnum], words, definition, examples)


def read_synsets(root: str | os.PathLike[str] | None = None, *,
                 pos: Sequence[str] = _POS) -> list[Synset]:
    """Read every synset of the given parts of speech.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Folder with ``data.noun`` etc.; default :data:`WORDNET_DIR`.
    pos : sequence of {"noun", "verb", "adj", "adv"}

    Raises
    ------
    ValidationError
        Missing files (naming the Debian package ``wordnet-base``) or
        malformed lines.
    """
    r = WORDNET_DIR if root is None else Path(root)
    bad = [p for p in pos if p not in _POS]
    if bad:
        raise ValidationError(f"`pos` entries must be in {_POS}; got {bad}")
    out = []
    for p in pos:
        path = r / f"data.{p}"
        if not path.is_file():
            raise ValidationError(
                f"WordNet file {str(path)!r} not found. Install the Debian package wordnet-base "
                "(apt-get install wordnet-base) or pass `root=` to a WordNet 3.0 dict folder")
        with open(path, encoding="utf-8", errors="replace") as fh:
            for k, line in enumerate(fh, start=1):
                if line.startswith("  ") or not line.strip():
                    continue  # licence header
                out.append(_parse_line(line, f"{path.name}, line {k}"))
    return out


def load_wordnet(root: str | os.PathLike[str] | None = None, *, pos: Sequence[str] = _POS,
                 texts: Sequence[str] = ("definition", "examples"), with_words: bool = False) -> ProbingSet:
    """WordNet glosses and examples as a text corpus labelled by the 45 supersenses.

    Parameters
    ----------
    root : str or os.PathLike, optional
        WordNet dict folder; default :data:`WORDNET_DIR` (Debian ``wordnet-base``).
    pos : sequence of str
        Parts of speech to read.
    texts : sequence of {"definition", "examples"}
        Which texts of each synset become samples.
    with_words : bool, default False
        Prefix each definition with the synset's words (``"dog, domestic dog:
        a member of the genus Canis ..."``).

    Returns
    -------
    ProbingSet
        ``samples`` the texts; ``concepts`` one-hot over :data:`LEXNAMES`
        (all 45 columns, in lexicographer-file order); ``groups`` the synset
        (a definition and its examples are one group, since they are not
        independent); ``ids`` like ``"n03001627:definition"`` or
        ``"n03001627:example1"``.

    Examples
    --------
    >>> wn = load_wordnet(pos=["noun"])  # doctest: +SKIP
    >>> wn.concept_names[5], len(wn)  # doctest: +SKIP
    ('noun.animal', 90000)
    """
    kinds = set(texts)
    if not kinds or not kinds <= {"definition", "examples"}:
        raise ValidationError(f"`texts` must name 'definition' and/or 'examples'; got {list(texts)}")
    samples, labels, groups, ids = [], [], [], []
    for g, s in enumerate(read_synsets(root, pos=pos)):
        sid = f"{s.pos}{s.offset:08d}"
        lab = LEXNAMES.index(s.lexname)
        if "definition" in kinds and s.definition:
            samples.append(f"{', '.join(s.words)}: {s.definition}" if with_words else s.definition)
            labels.append(lab)
            groups.append(g)
            ids.append(f"{sid}:definition")
        if "examples" in kinds:
            for j, e in enumerate(s.examples, start=1):
                samples.append(e)
                labels.append(lab)
                groups.append(g)
                ids.append(f"{sid}:example{j}")
    lab_arr = np.asarray(labels, dtype=np.int64)
    concepts = np.zeros((len(samples), len(LEXNAMES)), dtype=bool)
    concepts[np.arange(len(samples)), lab_arr] = True
    _, dense = np.unique(np.asarray(groups, dtype=np.int64), return_inverse=True)
    return ProbingSet(samples=samples, concepts=concepts, concept_names=LEXNAMES,
                      groups=dense.astype(np.int64), ids=tuple(ids))
