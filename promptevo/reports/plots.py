"""Small standalone SVG plots for experiment results (no plotting library needed): intervals per
arm, and curves with confidence bands."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _finite(xs):
    return [x for x in xs if x is not None and math.isfinite(x)]


def _scale(lo: float, hi: float, a: float, b: float):
    if hi <= lo:
        hi = lo + 1
    return lambda v: a + (v - lo) / (hi - lo) * (b - a)


def interval_plot(rows: Sequence[dict], title: str, label: str, width: int = 640) -> str:
    """One row per arm: point at `mean`, whisker from `low` to `high`, zero line dashed."""
    height = 60 + 28 * len(rows)
    values = _finite([v for r in rows for v in (r["low"], r["high"], r["mean"])]) + [0.0]
    sx = _scale(min(values), max(values), 170, width - 30)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
           f'<text x="10" y="18" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{sx(0):.1f}" x2="{sx(0):.1f}" y1="28" y2="{height - 24}" stroke="#999" stroke-dasharray="4"/>',
           f'<text x="{width / 2:.0f}" y="{height - 6}" font-size="11">{html.escape(label)}</text>']
    for i, r in enumerate(rows):
        y = 44 + 28 * i
        c = COLOURS[i % len(COLOURS)]
        out.append(f'<text x="10" y="{y + 4}" font-size="12">{html.escape(str(r["name"]))}</text>')
        if math.isfinite(r["low"]) and math.isfinite(r["high"]):
            out.append(f'<line x1="{sx(r["low"]):.1f}" x2="{sx(r["high"]):.1f}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="2"/>')
        out.append(f'<circle cx="{sx(r["mean"]):.1f}" cy="{y}" r="4" fill="{c}"><title>{r["mean"]:+.3f} '
                   f'[{r["low"]:+.3f}, {r["high"]:+.3f}]</title></circle>')
    out.append(f'<text x="170" y="{height - 24}" font-size="10">{min(values):+.2f}</text>'
               f'<text x="{width - 60}" y="{height - 24}" font-size="10">{max(values):+.2f}</text></svg>')
    return "".join(out)


def band_plot(series: dict[str, list[tuple[int, float, float, float]]], title: str, label: str,
              width: int = 640, height: int = 300) -> str:
    """series: name -> [(x, mean, low, high)]; a line per name with a shaded band."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="10" y="20">no data</text></svg>'
    xs = [p[0] for p in pts]
    ys = _finite([v for p in pts for v in p[1:]])
    sx = _scale(min(xs), max(xs), 50, width - 150)
    sy = _scale(min(ys), max(ys), height - 30, 30)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
           f'<text x="10" y="18" font-size="13">{html.escape(title)}</text>',
           f'<text x="{width / 2 - 60:.0f}" y="{height - 6}" font-size="11">{html.escape(label)}</text>',
           f'<text x="4" y="{sy(max(ys)) + 4:.1f}" font-size="10">{max(ys):+.2f}</text>',
           f'<text x="4" y="{sy(min(ys)):.1f}" font-size="10">{min(ys):+.2f}</text>']
    for i, (name, s) in enumerate(sorted(series.items())):
        c = COLOURS[i % len(COLOURS)]
        s = sorted(s)
        band = [(x, lo) for x, _, lo, _ in s if math.isfinite(lo)] + [(x, hi) for x, _, _, hi in reversed(s) if math.isfinite(hi)]
        if band:
            out.append(f'<polygon fill="{c}" fill-opacity="0.15" stroke="none" points="'
                       + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in band) + '"/>')
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                   + " ".join(f"{sx(x):.1f},{sy(m):.1f}" for x, m, _, _ in s) + '"/>')
        out.append(f'<text x="{width - 140}" y="{36 + 14 * i}" font-size="11" fill="{c}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round values spanning [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int(math.ceil((hi - first) / step)) + 1)]


def line_plot(series: dict[str, list[tuple[int, float]]], xlabel: str, ylabel: str,
              width: int = 760, height: int = 300) -> str:
    """Curves over integer x (rounds): every x labelled, y ticks at round values, the y label
    turned upright beside its tick labels, and the legend to the right of the plot area so it
    never covers data."""
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not pts:
        return "<p>No finished rounds yet.</p>"
    left, right, top, bottom = 78, width - 190, 14, height - 42
    xs = sorted({p[0] for p in pts})
    yt = _ticks(min([p[1] for p in pts] + [0.0]), max([p[1] for p in pts] + [0.0]))
    sx = _scale(xs[0] - 0.5, xs[-1] + 0.5, left, right)
    sy = _scale(yt[0], yt[-1], bottom, top)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" role="img">',
           f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#ccc"/>']
    for y in yt:
        out.append(f'<line x1="{left - 4}" x2="{right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 8}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">{y:+.3g}</text>')
    if yt[0] < 0 < yt[-1]:
        out.append(f'<line x1="{left}" x2="{right}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" stroke="#888" stroke-dasharray="4"/>')
    for x in xs:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#888"/>'
                   f'<text x="{sx(x):.1f}" y="{bottom + 16}" font-size="10" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{height - 6}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="12" y="{(top + bottom) / 2:.0f}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {(top + bottom) / 2:.0f})">{html.escape(ylabel)}</text>')
    for i, (name, s) in enumerate(sorted(series.items())):
        c = COLOURS[i % len(COLOURS)]
        s = sorted(p for p in s if math.isfinite(p[1]))
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                   + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s) + '"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"><title>{html.escape(name)}, round {x}: '
                f'{y:+.3f}</title></circle>' for x, y in s]
        out.append(f'<rect x="{right + 14}" y="{top + 6 + 16 * i}" width="10" height="10" fill="{c}"/>'
                   f'<text x="{right + 30}" y="{top + 15 + 16 * i}" font-size="11">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def scatter_plot(points: Sequence[tuple], xlabel: str, ylabel: str, width: int = 420, height: int = 320,
                 hlines: Sequence[tuple[float, str]] = (), legend: bool = False) -> str:
    """Labelled points (x, y, label[, y_low, y_high] for a whisker) with both zero lines dashed,
    and labelled horizontal reference lines (a baseline's level). `legend`: labels in a column
    right of the plot instead of beside the points (for points that crowd each other)."""
    pts = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return ""
    left, right, top, bottom = 60, width - (190 if legend else 20), 14, height - 40
    ys = [v for p in pts for v in (p[1], *p[3:5]) if math.isfinite(v)] + [y for y, _ in hlines] + [0.0]
    xt = _ticks(min([p[0] for p in pts] + [0.0]), max([p[0] for p in pts] + [0.0]))
    yt = _ticks(min(ys), max(ys))
    sx, sy = _scale(xt[0], xt[-1], left, right), _scale(yt[0], yt[-1], bottom, top)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" role="img">',
           f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#ccc"/>',
           f'<line x1="{sx(0):.1f}" x2="{sx(0):.1f}" y1="{top}" y2="{bottom}" stroke="#888" stroke-dasharray="4"/>',
           f'<line x1="{left}" x2="{right}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" stroke="#888" stroke-dasharray="4"/>']
    for y, label in hlines:
        out.append(f'<line x1="{left}" x2="{right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#bbb" stroke-dasharray="2 3"/>'
                   f'<text x="{right - 4}" y="{sy(y) - 3:.1f}" font-size="10" text-anchor="end" fill="#666">{html.escape(label)}</text>')
    out += [f'<text x="{sx(x):.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle">{x:+.3g}</text>' for x in xt]
    out += [f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">{y:+.3g}</text>' for y in yt]
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{height - 6}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="12" y="{(top + bottom) / 2:.0f}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {(top + bottom) / 2:.0f})">{html.escape(ylabel)}</text>')
    for i, (x, y, label, *whisker) in enumerate(pts):
        c = COLOURS[i % len(COLOURS)]
        if len(whisker) == 2 and all(math.isfinite(v) for v in whisker):
            out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(whisker[0]):.1f}" y2="{sy(whisker[1]):.1f}" '
                       f'stroke="{c}" stroke-width="2"/>')
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{c}"><title>{html.escape(label)}: '
                   f'{x:+.3f}, {y:+.3f}</title></circle>')
        if legend:
            out.append(f'<rect x="{right + 14}" y="{top + 6 + 16 * i}" width="10" height="10" fill="{c}"/>'
                       f'<text x="{right + 30}" y="{top + 15 + 16 * i}" font-size="11">{html.escape(label)}</text>')
        else:
            out.append(f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 4:.1f}" font-size="10">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
