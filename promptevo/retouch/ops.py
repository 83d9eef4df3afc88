"""The retouching and restoration operations: MonetGPT's three stages (lighting, colour,
colour-specific per hue band) and RestoreAgent's tools (denoise, sharpen, deblur, low-light lift,
white balance, deblocking).

Every operation is pure and deterministic, takes a [N, 3, H, W] batch in [0, 1] on any device and
one value per image (a float or an [N] tensor, so a search can try many values in one batch), and
returns a batch in [0, 1]. Values are bounded: `OPS[name].low/high`, and `neutral` leaves the
image as it is. Filters come from kornia where it has them.

Stages run in a fixed order (restore, lighting, colour, colour-specific); within a stage, plans
choose the order (RestoreAgent's point: denoise before sharpening, not after).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from promptevo.images import luminance

STAGES = ("restore", "lighting", "colour", "colour-specific")
HUE_BANDS = {"red": 0.0, "orange": 30.0, "yellow": 60.0, "green": 120.0, "aqua": 180.0, "blue": 240.0,
             "purple": 270.0, "magenta": 300.0}  # band centres in degrees
BAND_WIDTH = 45.0  # degrees from a band's centre to where its weight reaches zero


@dataclass(frozen=True)
class OpInfo:
    name: str
    stage: str
    low: float
    high: float
    doc: str  # what a value means, for people and for the planner's prompt
    apply: Callable  # (images [N,3,H,W], values [N,1,1,1]) -> images
    neutral: float = 0.0


def _values(images, value):
    import torch

    v = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    return (v.reshape(-1, 1, 1, 1) if v.ndim else v.reshape(1, 1, 1, 1)).expand(images.shape[0], 1, 1, 1)


def _smoothstep(lo: float, hi: float, x):
    t = ((x - lo) / (hi - lo)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _to_linear(x):
    from kornia.color import rgb_to_linear_rgb

    return rgb_to_linear_rgb(x.clamp(0, 1))


def _to_srgb(x):
    from kornia.color import linear_rgb_to_rgb

    return linear_rgb_to_rgb(x.clamp(0, 1))


# -- lighting --------------------------------------------------------------------------------


def exposure(x, v):
    return _to_srgb(_to_linear(x) * 2.0 ** v)


def contrast(x, v):
    pivot = luminance(x).mean(dim=(2, 3), keepdim=True)  # the image's own mean: contrast does not move exposure
    return pivot + (x - pivot) * 2.0 ** v


def highlights(x, v):
    return x + 0.3 * v * _smoothstep(0.5, 1.0, luminance(x))


def shadows(x, v):
    return x + 0.3 * v * (1 - _smoothstep(0.0, 0.5, luminance(x)))


def whites(x, v):
    return x * (1 + 0.3 * v * luminance(x) ** 2)


def blacks(x, v):
    b = -0.1 * v  # the black point: > 0 crushes, < 0 lifts
    return (x - b) / (1 - b)


# -- colour ----------------------------------------------------------------------------------


def saturation(x, v):
    y = luminance(x)
    return y + (x - y) * (1 + v)


def vibrance(x, v):
    y = luminance(x)
    s = x.amax(1, keepdim=True) - x.amin(1, keepdim=True)
    return y + (x - y) * (1 + v * (1 - s))


def _gains(x, r, g, b):
    import torch

    gains = torch.cat([r, g, b], dim=1)  # [N, 3, 1, 1]
    return _to_srgb(_to_linear(x) * gains)


def temperature(x, v):
    return _gains(x, 1 + 0.2 * v, 1 + 0 * v, 1 - 0.2 * v)


def tint(x, v):
    return _gains(x, 1 + 0.1 * v, 1 - 0.2 * v, 1 + 0.1 * v)


# -- colour-specific (per hue band) ----------------------------------------------------------


def _band_op(centre: float, what: str):
    def apply(x, v):
        import torch
        from kornia.color import hsv_to_rgb, rgb_to_hsv

        hsv = rgb_to_hsv(x.clamp(0, 1))
        h, s, val = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]  # h in radians
        d = torch.remainder(torch.rad2deg(h) - centre + 180.0, 360.0) - 180.0
        w = (1 - d.abs() / BAND_WIDTH).clamp(min=0) * s  # greys have no hue: left alone
        if what == "hue":
            h = torch.remainder(h + torch.deg2rad(20.0 * w * v), 2 * math.pi)
        elif what == "saturation":
            s = (s * (1 + w * v)).clamp(0, 1)
        else:
            val = (val * (1 + 0.5 * w * v)).clamp(0, 1)
        return hsv_to_rgb(torch.cat([h, s, val], dim=1))

    return apply


# -- restoration -----------------------------------------------------------------------------


def denoise(x, v):
    from kornia.filters import bilateral_blur

    smooth = bilateral_blur(x, (5, 5), 0.12, (1.5, 1.5))
    return x + v * (smooth - x)


def _unsharp(sigma: float):
    def apply(x, v):
        from kornia.filters import gaussian_blur2d

        k = 2 * math.ceil(3 * sigma) + 1
        return x + v * (x - gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect"))

    return apply


def low_light(x, v):
    y = luminance(x).clamp(min=1e-4)
    lifted = y ** (1 / (1 + 2 * v))
    return x * (lifted / y)


def white_balance(x, v):
    """Grey world, `v` of the way: each channel's mean moved towards the mean luminance."""
    means = x.mean(dim=(2, 3), keepdim=True).clamp(min=1e-4)
    target = luminance(means)
    return x * (target / means) ** v


def _illuminant_op(estimate: Callable):
    """A white balance from an illuminant estimate in linear light ([N, 3, 1, 1]): each channel
    scaled so the estimate becomes grey, `v` of the way (in log gain)."""

    def apply(x, v):
        lin = _to_linear(x)
        e = estimate(lin).clamp(min=1e-4)
        return _to_srgb(lin * (e.mean(1, keepdim=True) / e) ** v)

    return apply


def _minkowski(a, p: float = 6.0):
    return a.flatten(2).pow(p).mean(2).pow(1 / p)[..., None, None]


def _white_patch(lin):
    """Max-RGB, robustly: each channel's 99th percentile."""
    import torch

    return torch.quantile(lin.flatten(2).float(), 0.99, dim=2).to(lin.dtype)[..., None, None]


def _grey_edge(lin):
    """Grey-edge (van de Weijer et al. 2007): the Minkowski p=6 mean of each channel's gradient
    magnitude; edges are achromatic on average even where the scene's colours are not."""
    from kornia.filters import spatial_gradient

    g = spatial_gradient(lin, mode="sobel")  # [N, 3, 2, H, W]
    return _minkowski(g.pow(2).sum(2).sqrt())


def deblock(x, v):
    """Smooth across the 8x8 block edges of JPEG-like compression, and only there."""
    import torch
    from kornia.filters import box_blur

    h, w = x.shape[-2:]
    rows = (torch.arange(h, device=x.device) % 8).reshape(1, 1, h, 1)
    cols = (torch.arange(w, device=x.device) % 8).reshape(1, 1, 1, w)
    edge = ((rows == 0) | (rows == 7) | (cols == 0) | (cols == 7)).to(x.dtype)
    return x + v * edge * (box_blur(x, (3, 3), border_type="reflect") - x)


def _library() -> dict[str, OpInfo]:
    ops = [
        OpInfo("exposure", "lighting", -2, 2, "exposure in stops (EV), applied in linear light", exposure),
        OpInfo("contrast", "lighting", -1, 1, "contrast: tones spread by 2^value around the mean luminance", contrast),
        OpInfo("highlights", "lighting", -1, 1, "brightens (+) or recovers (-) the tones above mid-grey", highlights),
        OpInfo("shadows", "lighting", -1, 1, "lifts (+) or deepens (-) the tones below mid-grey", shadows),
        OpInfo("whites", "lighting", -1, 1, "moves the brightest tones up (+) or down (-)", whites),
        OpInfo("blacks", "lighting", -1, 1, "black point: lifts (+) or crushes (-) the darkest tones", blacks),
        OpInfo("saturation", "colour", -1, 1, "saturation: colour scaled by 1+value around luminance (-1: grey)", saturation),
        OpInfo("vibrance", "colour", -1, 1, "saturation of the less saturated colours mostly", vibrance),
        OpInfo("temperature", "colour", -1, 1, "warmer (+, more red, less blue) or cooler (-)", temperature),
        OpInfo("tint", "colour", -1, 1, "magenta (+) or green (-)", tint),
    ]
    for band, centre in HUE_BANDS.items():
        ops += [
            OpInfo(f"hue_{band}", "colour-specific", -1, 1, f"turns {band} hues by up to 20 degrees", _band_op(centre, "hue")),
            OpInfo(f"saturation_{band}", "colour-specific", -1, 1, f"saturation of {band} hues", _band_op(centre, "saturation")),
            OpInfo(f"luminance_{band}", "colour-specific", -1, 1, f"brightness of {band} hues", _band_op(centre, "luminance")),
        ]
    ops += [
        OpInfo("denoise", "restore", 0, 1, "edge-preserving (bilateral) smoothing, value = strength", denoise),
        OpInfo("sharpen", "restore", 0, 2, "unsharp mask, radius 1 px, value = amount", _unsharp(1.0)),
        OpInfo("deblur", "restore", 0, 2, "unsharp mask, radius 2.5 px, for soft or blurred images", _unsharp(2.5)),
        OpInfo("low_light", "restore", 0, 1, "lifts dark tones by a luminance gamma of 1/(1+2 value)", low_light),
        OpInfo("white_balance", "restore", 0, 1, "grey-world white balance, value = how far", white_balance),
        OpInfo("deblock", "restore", 0, 1, "smooths 8x8 block edges (compression artefacts)", deblock),
        OpInfo("white_patch", "restore", 0, 1, "white balance from the brightest tones (max-RGB), value = how far",
               _illuminant_op(_white_patch)),
        OpInfo("shades_of_grey", "restore", 0, 1, "white balance from the p=6 mean of each channel (shades of grey)",
               _illuminant_op(_minkowski)),
        OpInfo("grey_edge", "restore", 0, 1, "white balance from the colours of edges (grey-edge), value = how far",
               _illuminant_op(_grey_edge)),
    ]
    return {op.name: op for op in ops}


OPS: dict[str, OpInfo] = _library()


def apply_op(name: str, images, value):
    """One operation on a batch, `value` per image (or one for all), clamped to [0, 1]."""
    return OPS[name].apply(images, _values(images, value)).clamp(0, 1)


def apply_steps(images, steps):
    """An ordered list of (op, value) pairs on a batch (values: floats or [N] tensors)."""
    for name, value in steps:
        images = apply_op(name, images, value)
    return images


def _register() -> None:
    from promptevo.registry import register_post_op

    for name in OPS:
        register_post_op(name)(lambda images, value, _name=name: apply_op(_name, images, value))


_register()
