"""Models built once into the local cache folder (the tiny stand-ins, the faithful random-weight
architectures), atomically, so concurrent builders never see half a file. Nothing here touches the
network."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("PROMPTEVO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "promptevo"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(name: str, builder: Callable[[Path], None]) -> Path:
    """The cached file or folder `name`, made by `builder(path)` on first use."""
    dest = cache_dir() / name
    if dest.exists():
        return dest
    tmp = dest.with_name(f".{name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    builder(tmp)
    try:
        os.replace(tmp, dest)  # atomic: a concurrent builder may have won; either copy is identical
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def write_clip_tokenizer(folder: Path) -> None:
    """CLIP's real BPE tokenizer, written as vocab.json + merges.txt from the vocabulary file that
    open_clip ships, so tokenisation (and the 77-token window) behaves as in Stable Diffusion."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
