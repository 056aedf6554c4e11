"""``neurocert convert``: write a chunked Zarr array from .npy, .npz or Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import register


def _chunks(text: str) -> tuple[int, int]:
    try:
        parts = tuple(int(x) for x in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SAMPLES,COLUMNS; got {text!r}") from None
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected two positive integers SAMPLES,COLUMNS; got {text!r}")
    return parts[0], parts[1]


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, metavar="SOURCE",
                   help="(n_samples, n_columns) array: .npy, .npz or .parquet")
    p.add_argument("dest", type=Path, metavar="DEST",
                   help="Zarr array directory to create (e.g. layer4.zarr)")
    p.add_argument("--key", default=None, metavar="K",
                   help="array name inside an .npz holding several arrays")
    p.add_argument("--dtype", default=None, metavar="T",
                   help="stored dtype, e.g. float32 (default: the source's)")
    p.add_argument("--chunks", type=_chunks, default=None, metavar="S,C",
                   help="chunk shape: samples,columns (default: about 4 MiB with 64 columns)")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")


@register("convert", help="convert .npy/.npz/Parquet activations or concepts to a chunked "
                          "Zarr array (out-of-core and Dask runs)", add_arguments=_arguments)
def _run_convert(args: argparse.Namespace) -> int:
    import numpy as np

    from ..exceptions import ValidationError
    from ..storage import convert

    dtype = None
    if args.dtype is not None:
        try:
            dtype = np.dtype(args.dtype)
        except TypeError:
            raise ValidationError(f"--dtype: unknown dtype {args.dtype!r}") from None
    z = convert(args.source, args.dest, key=args.key, dtype=dtype, chunks=args.chunks,
                overwrite=args.overwrite)
    print(f"wrote {z.shape[0]} x {z.shape[1] if z.ndim > 1 else 1} {z.dtype} array to "
          f"{args.dest} (chunks {tuple(z.chunks)})")
    return 0
