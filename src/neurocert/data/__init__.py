"""Probing data: readers and generators of probing sets and their concept labels.

* :mod:`~neurocert.data.segmentation` — the :class:`SegmentationSet` interface (pixel labels);
* :mod:`~neurocert.data.broden` — the Broden on-disk format (lazy reader, writer);
* :mod:`~neurocert.data.broden_lite` — a Broden-format set built from offline real images;
* :mod:`~neurocert.data.idx` — IDX files and Fashion-MNIST (Debian ``dataset-fashion-mnist``);
* :mod:`~neurocert.data.images`, :mod:`~neurocert.data.arrays`, :mod:`~neurocert.data.text` —
  image folders, ``.npy``/``.npz`` arrays and text corpora as :class:`ProbingSet` objects;
* :mod:`~neurocert.data.wordnet` — WordNet 3.0 glosses labelled by supersense (Debian ``wordnet-base``);
* :mod:`~neurocert.data.spacy_labels` — spaCy POS/NER token labels aligned to word pieces.

Pillow and scikit-image are optional (``pip install 'neurocert[images]'``) and imported only
when images are read or generated.
"""

from .arrays import load_arrays
from .broden import BrodenDataset, BrodenWriter, EmptyCategoryWarning, load_broden
from .idx import FashionMNIST, load_fashion_mnist, read_idx
from .images import SkippedImageWarning, load_image_folder
from .probing import ProbingSet, TokenProbingSet, multi_hot
from .segmentation import (
    InMemorySegmentationSet,
    SegmentationSet,
    check_segmentation_set,
)
from .spacy_labels import (
    WordpieceLabels,
    align_spans,
    load_spacy,
    spacy_available,
    spacy_token_labels,
    wordpiece_labels,
)
from .text import load_text_corpus, load_token_corpus, read_jsonl
from .wordnet import load_wordnet, read_synsets

__all__ = [
    "BrodenDataset",
    "BrodenWriter",
    "EmptyCategoryWarning",
    "FashionMNIST",
    "InMemorySegmentationSet",
    "ProbingSet",
    "SegmentationSet",
    "SkippedImageWarning",
    "TokenProbingSet",
    "WordpieceLabels",
    "align_spans",
    "check_segmentation_set",
    "load_arrays",
    "load_broden",
    "load_fashion_mnist",
    "load_image_folder",
    "load_spacy",
    "load_text_corpus",
    "load_token_corpus",
    "load_wordnet",
    "multi_hot",
    "read_idx",
    "read_jsonl",
    "read_synsets",
    "spacy_available",
    "spacy_token_labels",
    "wordpiece_labels",
]
