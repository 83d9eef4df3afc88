"""Reading photographs people hand to `promptevo retouch`: any mode PIL opens (CMYK, 16-bit,
palette, alpha, greyscale) becomes RGB in [0, 1]; what cannot be retouched (not an image, a
truncated file, too small or too large) raises ImageRejected with one line that says why."""

from __future__ import annotations

import warnings
from pathlib import Path

MIN_SIDE = 16  # the SSIM guard's window and the filters need some room
MAX_SIDE = 8192


class ImageRejected(ValueError):
    """This file cannot be retouched; the message says why, in one line."""


def load_rgb(path: Path, *, max_side: int = MAX_SIDE):
    """[3, H, W] float32 tensor in [0, 1], and a note on what was converted ("" when nothing)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageRejected("no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if min(w, h) < MIN_SIDE:
                    raise ImageRejected(f"{w}x{h} pixels is too small to retouch (at least {MIN_SIDE} on each side)")
                if max(w, h) > max_side:
                    raise ImageRejected(f"{w}x{h} pixels is larger than --max-side {max_side}; resize it or raise --max-side")
                im.load()
                mode = im.mode
                if mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float greyscale: keep the range
                    a = np.asarray(im, dtype=np.float64)
                    top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
                    grey = torch.from_numpy((a / top).clip(0, 1).astype(np.float32))
                    return grey.expand(3, *grey.shape).clone(), f"{mode} greyscale scaled to [0, 1]"
                note = ""
                if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    rgb = Image.alpha_composite(white, rgba).convert("RGB")
                    note = "transparency composited on white"
                else:
                    rgb = im.convert("RGB")
                    if mode not in ("RGB", "L"):
                        note = f"{mode} converted to RGB"
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("too many pixels (PIL refuses it as a possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"cannot be decoded ({str(exc).splitlines()[0][:120] or type(exc).__name__}): truncated or damaged?") from None
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0, note


def save_png(image, path: Path) -> None:
    """A [3, H, W] tensor in [0, 1] as an 8-bit PNG."""
    from promptevo.render import png_bytes, to_uint8

    Path(path).write_bytes(png_bytes(to_uint8(image[None])[0]))
