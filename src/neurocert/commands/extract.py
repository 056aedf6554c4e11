"""``neurocert extract``: activations of a bundled pretrained model over images or texts, to .npy files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import register

MODELS = ("efficientnet-lite0", "minilm")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=MODELS, required=True,
                   help="pretrained model installed from PyPI (checksum-verified, offline)")
    p.add_argument("--inputs", type=Path, required=True, metavar="FILE",
                   help="images: .npy uint8 (n, H, W, 3) RGB; texts: .txt (one per line) or .jsonl")
    p.add_argument("--text-field", default="text", metavar="KEY", help="JSONL field holding the text")
    p.add_argument("--layers", nargs="+", default=None, metavar="PATH",
                   help="dotted module paths (default: every layer the model suggests)")
    p.add_argument("--pooling", default="mean",
                   choices=("mean", "max", "cls", "tokens", "spatial", "none"),
                   help="mean/max per channel or sequence, cls, tokens (rows + groups), spatial maps")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="storage type")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="content-keyed activation cache; an interrupted run resumes from it")
    p.add_argument("--out", type=Path, default=Path("activations"), metavar="DIR",
                   help="folder for <layer>.npy (+ <layer>.groups.npy for tokens) and extract.json")


def _read_inputs(path: Path, model: str, field: str):
    import json

    import numpy as np

    from ..exceptions import ValidationError

    if not path.is_file():
        raise ValidationError(f"--inputs: no such file {str(path)!r}")
    if model == "efficientnet-lite0":
        if path.suffix != ".npy":
            raise ValidationError(f"--inputs for {model} must be a .npy (n, H, W, 3) RGB array; got {path.name}")
        return np.load(path, mmap_mode="r")
    if path.suffix == ".txt":
        texts = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
        return [t for t in texts if t.strip()]
    if path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if field not in row:
                raise ValidationError(f"--inputs line {i} has no field {field!r} (--text-field)")
            texts.append(str(row[field]))
        return texts
    raise ValidationError(f"--inputs for {model} must be .txt or .jsonl; got {path.name}")


@register("extract", help="activations of a bundled pretrained model (EfficientNet-Lite0, MiniLM) "
                          "over images or texts, written as .npy", add_arguments=_arguments)
def _run_extract(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from ..extract import models
    from ..results import atomic_path

    loaded = models.efficientnet_lite0() if args.model == "efficientnet-lite0" else models.minilm()
    inputs = _read_inputs(args.inputs, args.model, args.text_field)
    acts = loaded.extract(inputs, layers=args.layers, pooling=args.pooling, batch_size=args.batch_size,
                          dtype=args.dtype, device=args.device, cache_dir=args.cache_dir,
                          progress_bar=not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"model": loaded.name, "versions": dict(loaded.versions), "files": dict(loaded.files),
                "inputs": str(args.inputs), "pooling": args.pooling, "dtype": args.dtype, "layers": {}}
    for layer, a in acts.items():
        stem = layer or "output"
        entry = {"values": f"{stem}.npy", "shape": list(a.values.shape), "n_samples": a.n_samples}
        arrays = {f"{stem}.npy": a.values}
        if a.groups is not None:
            arrays[f"{stem}.groups.npy"] = a.groups
            arrays[f"{stem}.positions.npy"] = a.positions
            entry.update(groups=f"{stem}.groups.npy", positions=f"{stem}.positions.npy")
        for name, arr in arrays.items():
            with atomic_path(args.out / name) as tmp:
                np.save(tmp, np.asarray(arr))
        manifest["layers"][layer] = entry
        print(f"{layer or '<output>'}: {a.values.dtype}{tuple(a.values.shape)} -> {args.out / entry['values']}")
    with atomic_path(args.out / "extract.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    print(f"manifest: {args.out / 'extract.json'}")
    return 0
