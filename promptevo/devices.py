"""Device and dtype resolution shared by the renderer and the scorer, plus quieting of the
libraries' own progress bars (ours are on stderr through rich)."""

from __future__ import annotations

import contextlib
import logging
import os


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if device == "cpu" and dtype == "float16":
        return torch.float32  # half matmuls on CPU are slow or missing; the config records the fallback
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def quiet_libraries() -> None:
    """Errors only from the model libraries (an offline hub cache makes huggingface_hub warn on
    every load that it could not reach the hub)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


@contextlib.contextmanager
def quiet_root_logger():
    """open_clip warns through the root logger that a model has no pretrained weights; ours are
    loaded right after, so the warning would only mislead."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
