"""A minimal progress bar: tqdm when installed, otherwise a plain stderr counter."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar on stderr when ``enabled``.

    Uses tqdm if it is installed; otherwise prints a single updating line.
    Disabled bars cost nothing.
    """
    if not enabled:
        yield from iterable
        return
    try:
        from tqdm.auto import tqdm  # optional
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)
        return
    start = time.perf_counter()
    done = 0
    for item in iterable:
        yield item
        done += 1
        of = f"/{total}" if total else ""
        sys.stderr.write(f"\r{desc} {done}{of} ({time.perf_counter() - start:.1f}s)")
        sys.stderr.flush()
    sys.stderr.write("\n")
