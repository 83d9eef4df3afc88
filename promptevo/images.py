"""Image helpers every wing shares: images are [N, 3, H, W] float tensors in [0, 1] in memory,
PNG bytes on disk. Reading photographs people hand to `promptevo retouch`: any mode PIL opens
(CMYK, 16-bit, palette, alpha, greyscale) becomes RGB in [0, 1]; what cannot be retouched (not an
image, a truncated file, too small or too large) raises ImageRejected with one line that says why."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
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
    Path(path).write_bytes(png_bytes(to_uint8(image[None])[0]))


def to_uint8(images):
    """Quantise like a PNG does, so scoring the tensor equals scoring the saved file."""
    import torch

    return (images.detach().float().clamp(0, 1) * 255).round().to(device="cpu", dtype=torch.uint8)


def png_bytes(image_uint8) -> bytes:
    """One [3, H, W] uint8 tensor to PNG bytes (no metadata, so equal pixels give equal bytes)."""
    from PIL import Image

    array = image_uint8.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def image_batch(images, prompts: Sequence[str]):
    """What every reward's `score` takes: a [N, 3, H, W] tensor in [0, 1] (or PIL images, turned
    into one), with one prompt per image."""
    import torch

    if not torch.is_tensor(images):
        images = pil_to_tensor(images)
    if len(images) != len(prompts):
        raise ValueError("one prompt per image")
    return images


def load_image_tensor(path) -> "object":
    """An image file (a path or a file object) as a [3, H, W] tensor in [0, 1] (to score an image
    made earlier, or one that came back as PNG bytes)."""
    from PIL import Image

    with Image.open(path) as im:
        return pil_to_tensor([im])[0]  # type: ignore[index]


def pil_to_tensor(images) -> "object":
    """PIL images (same size) -> [N, 3, H, W] floats in [0, 1], as ToTensor makes them."""
    import numpy as np
    import torch

    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError("images of different sizes: score them in separate calls")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)


def luminance(images):
    """Rec. 709 luma of gamma-encoded RGB, [N, 1, H, W]."""
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
