"""Measured statistics of images, batched on torch: what the retouch planner reads, and the
classical no-reference quality measures the retouch objective weights (exposure, contrast,
colourfulness, noise), plus the full-reference PSNR/SSIM (scikit-image) a benchmark reports.

The no-reference measures penalise only what lies outside a normal band for natural photographs,
fixed here from photographic rules of thumb, not from any reference image: a median luminance
between 0.30 and 0.60, RMS contrast between 0.15 and 0.30, Hasler-Suesstrunk colourfulness
between 0.25 and 0.60. Inside its band a photograph is not pushed anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from promptevo.images import image_batch, luminance
from promptevo.registry import RewardModel, register_reward

MEDIAN_BAND, CONTRAST_BAND, COLOURFULNESS_BAND = (0.30, 0.60), (0.15, 0.30), (0.25, 0.60)


def outside(value, band: tuple[float, float]):
    """How far a value lies outside [low, high] (0 inside)."""
    return (band[0] - value).clamp(min=0) + (value - band[1]).clamp(min=0)


def _percentiles(y, qs: Sequence[float]):
    import torch

    flat = y.flatten(1)
    return torch.quantile(flat, torch.tensor(qs, dtype=flat.dtype, device=flat.device), dim=1).T  # [N, len(qs)]


def noise_sigma(images):
    """Immerkaer's fast noise estimate on luminance (standard deviation in [0, 1] units)."""
    import torch
    import torch.nn.functional as F

    y = luminance(images)
    k = torch.tensor([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=y.dtype, device=y.device).reshape(1, 1, 3, 3)
    r = F.conv2d(y, k).abs()
    h, w = y.shape[-2:]
    return math.sqrt(math.pi / 2) * r.sum(dim=(1, 2, 3)) / (6 * (w - 2) * (h - 2))


def sharpness(images):
    """Variance of the luminance Laplacian (x 1000): low for blurred images."""
    import torch
    import torch.nn.functional as F

    y = luminance(images)
    k = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=y.dtype, device=y.device).reshape(1, 1, 3, 3)
    return 1000 * F.conv2d(y, k).flatten(1).var(dim=1)


def blockiness(images):
    """Mean luminance step across 8-pixel block edges over the mean step elsewhere (1: none)."""
    y = luminance(images)
    dx = (y[..., :, 1:] - y[..., :, :-1]).abs()
    edge = dx[..., :, 7::8].mean(dim=(1, 2, 3))
    inner = dx.mean(dim=(1, 2, 3)).clamp(min=1e-6)
    return edge / inner


def colourfulness(images):
    """Hasler and Suesstrunk's colourfulness, in [0, 1] units (about 0.3-0.6 for photographs)."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    return (rg.std(1) ** 2 + yb.std(1) ** 2).sqrt() + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()


def describe(images) -> list[dict[str, float]]:
    """Per image: what a retoucher looks at first, rounded for a prompt."""
    import torch
    from kornia.color import rgb_to_hsv, rgb_to_lab

    images = images.float().clamp(0, 1)
    y = luminance(images)
    p = _percentiles(y, [0.01, 0.05, 0.5, 0.95, 0.99])
    sat = rgb_to_hsv(images)[:, 1].flatten(1).mean(1)
    lab = rgb_to_lab(images)
    a, b = lab[:, 1].flatten(1).mean(1), lab[:, 2].flatten(1).mean(1)
    low, high = (y < 0.02).flatten(1).float().mean(1), (y > 0.98).flatten(1).float().mean(1)
    stats = torch.stack([p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4], low, high, y.flatten(1).std(1), sat,
                         colourfulness(images), a, b, noise_sigma(images), sharpness(images), blockiness(images)], 1)
    keys = ["luminance_p1", "luminance_p5", "luminance_median", "luminance_p95", "luminance_p99", "clipped_dark",
            "clipped_bright", "rms_contrast", "mean_saturation", "colourfulness", "cast_green_magenta",
            "cast_blue_yellow", "noise_sigma", "sharpness", "blockiness"]
    return [{k: round(float(v), 4) for k, v in zip(keys, row)} for row in stats.cpu()]


# -- no-reference measures as rewards (higher is better) ----------------------------------------


def exposure_score(images):
    """100 with the median luminance in its band and nothing clipped; 2 points off per 0.01 of
    the median outside the band, 1 point per percent of clipped pixels."""
    y = luminance(images.float().clamp(0, 1))
    median = y.flatten(1).median(1).values
    clipped = ((y < 0.02) | (y > 0.98)).flatten(1).float().mean(1)
    return 100 - 200 * outside(median, MEDIAN_BAND) - 100 * clipped


def contrast_score(images):
    """Minus how far RMS contrast lies outside its band, in percent."""
    y = luminance(images.float().clamp(0, 1))
    return -100 * outside(y.flatten(1).std(1), CONTRAST_BAND)


def colourfulness_score(images):
    """Minus how far colourfulness lies outside its band, in percent."""
    return -100 * outside(colourfulness(images.float().clamp(0, 1)), COLOURFULNESS_BAND)


def noise_score(images):
    """Minus the estimated noise, in percent of full scale."""
    return -100 * noise_sigma(images.float().clamp(0, 1))


class MeasureReward(RewardModel):
    """A classical measure as a reward model: image only, deterministic, batched."""

    def __init__(self, kind: str, fn):
        self.kind, self._fn = kind, fn

    version = "v1"

    @property
    def name(self) -> str:
        return f"{self.kind}-v1"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        return [float(v) for v in self._fn(image_batch(images, prompts)).cpu()]


MEASURES = {"exposure": exposure_score, "contrast": contrast_score, "colourfulness": colourfulness_score,
            "noise": noise_score}
_FACTS = {  # what each measure rewards, on what scale
    "exposure": ("classical exposure: median luminance within 0.30-0.60, nothing clipped (prompt ignored)",
                 "100 at best; 2 points per 0.01 of median outside the band, 1 per percent clipped", 10.0),
    "contrast": ("classical contrast: RMS contrast within 0.15-0.30 (prompt ignored)",
                 "0 inside the band, minus the distance outside it in percent", 5.0),
    "colourfulness": ("Hasler-Suesstrunk colourfulness within 0.25-0.60 (prompt ignored)",
                      "0 inside the band, minus the distance outside it in percent", 10.0),
    "noise": ("estimated noise (Immerkaer), prompt ignored", "minus the noise sigma in percent; 0 is clean", 1.0),
}
for _kind, _fn in MEASURES.items():
    _measures, _note, _scale = _FACTS[_kind]
    register_reward(_kind, measures=_measures, scale_note=_note, scale=_scale, needs="nothing (computed)", version="v1",
                    arch="measure", modules=("kornia",))(lambda c, _k=_kind, _f=_fn: MeasureReward(_k, _f))


# -- full reference -----------------------------------------------------------------------------


def to_numpy(image) -> Any:
    """[3, H, W] tensor in [0, 1] -> [H, W, 3] float64 array."""
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().double().numpy()


def psnr(image, reference) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(to_numpy(reference), to_numpy(image), data_range=1.0))


def ssim(image, reference) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(to_numpy(reference), to_numpy(image), data_range=1.0, channel_axis=2))


def ssim_batch(images, reference):
    """SSIM of each image of a batch to its reference (one [3, H, W] for all, or one each), in
    torch with a Gaussian window of 11 as Wang et al.: the identity guard a search evaluates on
    every trial."""
    from kornia.metrics import ssim as kssim

    ref = reference.expand_as(images) if reference.ndim == 3 else reference
    return kssim(images.float(), ref.float(), 11).flatten(1).mean(1)
