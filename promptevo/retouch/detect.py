"""Detection before action (RestoreAgent's first step; a photo editor's first rule): which
degradations an image has, each with a confidence from measured statistics, and only then which
operations. An image with nothing detected is left exactly as it is.

Each detector is a ramp on one statistic: confidence 0 at `clean` (beyond the most extreme value
seen on the benchmark's clean photographs, so a good photograph detects nothing), 1 at `sure`;
an operation is planned at confidence >= ACT_AT. The thresholds were set on the clean and degraded
photographs of experiments/retouch.toml (192-pixel side): they are not validated on other
photographs, and weak degradations (a strength-1 colour cast, a slight blur) sit inside the range
clean photographs cover, so they are left alone by design.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from promptevo.images import luminance

ACT_AT = 0.5


@dataclass(frozen=True)
class Finding:
    degradation: str
    confidence: float
    evidence: str  # the statistic and its value, for the sidecar
    op: str  # the operation that treats it
    value: float  # its starting value, from the statistic

    def to_dict(self) -> dict[str, Any]:
        return {"degradation": self.degradation, "confidence": round(self.confidence, 3), "evidence": self.evidence,
                "op": self.op, "value": round(self.value, 3)}


def blur_effect(y):
    """Crete-Roffet et al.'s no-reference blur (2007) per image of a luminance batch [N, 1, H, W]:
    how little of the image's local variation a strong re-blur removes (0 sharp, 1 blurred)."""
    import torch.nn.functional as F

    out = []
    for dim in (2, 3):
        size = [1, 1, 1, 1]
        size[dim] = 9
        blurred = F.avg_pool2d(F.pad(y, (4, 4, 0, 0) if dim == 3 else (0, 0, 4, 4), mode="replicate"),
                               tuple(size[2:]), stride=1)
        d_f = y.diff(dim=dim).abs()
        d_b = blurred.diff(dim=dim).abs()
        s_f = d_f.flatten(1).sum(1).clamp(min=1e-8)
        s_v = (d_f - d_b).clamp(min=0).flatten(1).sum(1)
        out.append((s_f - s_v) / s_f)
    return out[0].maximum(out[1])


def cast_angle(images):
    """Degrees between the grey-edge illuminant estimate (linear light) and neutral grey."""
    from promptevo.retouch.ops import _grey_edge, _to_linear

    e = _grey_edge(_to_linear(images)).flatten(1)
    cos = (e.sum(1) / (e.norm(dim=1) * math.sqrt(3))).clamp(-1, 1)
    return cos.acos() * 180 / math.pi


def statistics(images) -> list[dict[str, float]]:
    """Per image of a [N, 3, H, W] batch: what the detectors read."""
    import torch

    from promptevo.rewards.measures import colourfulness, noise_sigma

    images = images.float().clamp(0, 1)
    y = luminance(images)
    q = torch.quantile(y.flatten(1), torch.tensor([0.01, 0.5, 0.99], dtype=y.dtype), dim=1).T
    sat = (images.amax(1) - images.amin(1)).flatten(1).mean(1)
    cols = {"luminance_p1": q[:, 0], "luminance_median": q[:, 1], "luminance_p99": q[:, 2],
            "tonal_range": q[:, 2] - q[:, 0], "colourfulness": colourfulness(images), "chroma": sat,
            "noise_sigma": noise_sigma(images), "blur": blur_effect(y), "cast_angle": cast_angle(images)}
    return [{k: round(float(v[i]), 4) for k, v in cols.items()} for i in range(len(images))]


def _ramp(x: float, clean: float, sure: float) -> float:
    return min(1.0, max(0.0, (x - clean) / (sure - clean)))


def detect(s: Mapping[str, float]) -> list[Finding]:
    """Every degradation with a confidence above zero, most confident first."""
    found = []

    def add(name: str, conf: float, evidence: str, op: str, value: float) -> None:
        if conf > 0:
            found.append(Finding(name, conf, evidence, op, value))

    median = max(s["luminance_median"], 1e-3)
    noise = _ramp(s["noise_sigma"], 0.018, 0.022)
    add("noise", noise, f"noise sigma {s['noise_sigma']:.4f} (clean photographs: at most 0.017)", "denoise",
        min(1.0, max(0.2, (s["noise_sigma"] - 0.005) / 0.04)))
    if noise < ACT_AT:  # noise hides blur from the re-blur measure, and denoising blurs
        add("blur", _ramp(s["blur"], 0.42, 0.50), f"re-blur measure {s['blur']:.3f} (clean: at most 0.41)", "deblur",
            min(2.0, max(0.3, (s["blur"] - 0.3) * 5)))
    add("underexposure", _ramp(-s["luminance_p99"], -0.52, -0.42),
        f"99th percentile of luminance {s['luminance_p99']:.3f} (clean: at least 0.527)", "exposure",
        min(2.0, max(0.3, 2.2 * math.log2(0.8 / max(s["luminance_p99"], 0.05)))))
    add("overexposure", _ramp(median, 0.62, 0.70), f"median luminance {median:.3f} (clean: at most 0.60)", "exposure",
        max(-2.0, min(-0.3, 2.2 * math.log2(0.5 / median))))
    add("low contrast", _ramp(-s["tonal_range"], -0.47, -0.38),
        f"1-99% luminance range {s['tonal_range']:.3f} (clean: at least 0.49)", "contrast",
        min(1.0, max(0.2, math.log2(0.75 / max(s["tonal_range"], 0.05)))))
    if s["chroma"] > 0.02:  # a greyscale photograph is not a desaturated one
        add("desaturation", _ramp(-s["colourfulness"], -0.10, -0.06),
            f"colourfulness {s['colourfulness']:.3f} with colour present (chroma {s['chroma']:.3f})", "saturation",
            min(1.0, max(0.2, (0.2 - s["colourfulness"]) / 0.2)))
    add("colour cast", _ramp(s["cast_angle"], 20.0, 26.0),
        f"edge colour {s['cast_angle']:.1f} degrees from grey (clean: at most 19.5)", "grey_edge", 1.0)
    return sorted(found, key=lambda f: -f.confidence)


def acted(findings: list[Finding]) -> list[Finding]:
    """The findings confident enough to act on, one per operation (the most confident)."""
    out: dict[str, Finding] = {}
    for f in findings:
        if f.confidence >= ACT_AT and f.op not in out:
            out[f.op] = f
    return list(out.values())
