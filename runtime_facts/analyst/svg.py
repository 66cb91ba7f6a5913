"""Hand-drawn SVG charts for the HTML report: no JavaScript, no fonts or files to fetch.

Pure functions: data in, SVG text out. Coordinates are rounded to one decimal and every
label is escaped, so the same data always gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

FONT = 'font-family="system-ui, \'DejaVu Sans\', sans-serif" font-size="12"'
CHAR_WIDTH = 7.2
"""Generous width of one 12px character, to size label margins without measuring text."""
MAX_LABEL = 44
MAX_LEFT = 12 + CHAR_WIDTH * MAX_LABEL
AXIS = "#6b7280"
GRID = "#e5e7eb"


def fmt_number(value: float) -> str:
    """12,345 for integral values, 0.42 / 12.5 otherwise."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top` (steps of 1, 2 or 5 x 10^k)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if step < 1 and top >= 1:
        step = 1.0
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _label(text: str, limit: int = MAX_LABEL) -> str:
    """Cut in the middle: both a symbol's package and its method name stay readable."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def _open(chart_id: str, title: str, width: float, height: float) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(chart_id)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" height="{_n(height)}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-title" {FONT}>',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
    ]


def _legend(
    items: Sequence[tuple[str, str]], x: float, y: float, right: float
) -> tuple[list[str], float]:
    """Legend entries, wrapped onto new rows at `right`; returns them and the last row's y."""
    parts = []
    start = x
    for name, color in items:
        step = 14 + CHAR_WIDTH * len(name) + 16
        if x > start and x + step > right:
            x, y = start, y + 16
        parts.append(
            f'<rect class="legend" x="{_n(x)}" y="{_n(y - 9)}" width="10" height="10" '
            f'fill="{color}"/><text x="{_n(x + 14)}" y="{_n(y)}">{escape(name)}</text>'
        )
        x += step
    return parts, y


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    chart_id: str,
    title: str,
    color: str = "#2563eb",
    width: float = 760,
) -> str:
    """Horizontal bars, one per (label, value), in the order given."""
    bar, gap = 18.0, 6.0
    left = min(MAX_LEFT, 12 + CHAR_WIDTH * max([len(_label(lbl)) for lbl, _ in items] or [4]))
    right = 70.0
    height = 16 + len(items) * (bar + gap) + 28
    top = max([v for _, v in items] or [0.0])
    ticks = nice_ticks(top)
    scale = (width - left - right) / ticks[-1]
    parts = _open(chart_id, title, width, height)
    axis_y = 10 + len(items) * (bar + gap)
    for tick in ticks:
        x = left + tick * scale
        parts.append(
            f'<line x1="{_n(x)}" y1="10" x2="{_n(x)}" y2="{_n(axis_y)}" stroke="{GRID}"/>'
            f'<text x="{_n(x)}" y="{_n(axis_y + 16)}" text-anchor="middle" '
            f'fill="{AXIS}">{fmt_number(tick)}</text>'
        )
    for i, (label, value) in enumerate(items):
        y = 10 + i * (bar + gap)
        w = max(value * scale, 1.0 if value else 0.0)
        parts.append(
            f'<g class="bar"><title>{escape(label)}: {fmt_number(value)}</title>'
            f'<text x="{_n(left - 8)}" y="{_n(y + bar - 5)}" text-anchor="end">'
            f"{escape(_label(label))}</text>"
            f'<rect x="{_n(left)}" y="{_n(y)}" width="{_n(w)}" height="{_n(bar)}" '
            f'fill="{color}"/>'
            f'<text x="{_n(left + w + 6)}" y="{_n(y + bar - 5)}">{fmt_number(value)}</text></g>'
        )
    parts.append(
        f'<line x1="{_n(left)}" y1="10" x2="{_n(left)}" y2="{_n(axis_y)}" stroke="{AXIS}"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _x_labels(labels: Sequence[str], xs: Sequence[float], y: float) -> list[str]:
    every = max(1, math.ceil(len(labels) / 12))
    return [
        f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="middle" fill="{AXIS}">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % every == 0 or i == len(labels) - 1
    ]


def _y_axis(
    ticks: Sequence[float], left: float, right: float, top: float, bottom: float
) -> list[str]:
    span = ticks[-1]
    parts = []
    for tick in ticks:
        y = bottom - (tick / span) * (bottom - top)
        parts.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" stroke="{GRID}"/>'
            f'<text x="{_n(left - 6)}" y="{_n(y + 4)}" text-anchor="end" '
            f'fill="{AXIS}">{fmt_number(tick)}</text>'
        )
    return parts


def line_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    chart_id: str,
    title: str,
    width: float = 760,
    height: float = 260,
) -> str:
    """One polyline (with point markers) per series over shared x labels."""
    left, right, top, bottom = 64.0, width - 40, 30.0, height - 30  # room for the last label
    peak = max([v for _, values, _ in series for v in values] or [0.0])
    ticks = nice_ticks(peak)
    step = (right - left) / max(1, len(labels) - 1)
    xs = [left + i * step if len(labels) > 1 else (left + right) / 2 for i in range(len(labels))]
    parts = _open(chart_id, title, width, height)
    parts += _y_axis(ticks, left, right, top, bottom)
    parts += _legend([(name, color) for name, _, color in series], left, 16, right)[0]
    for name, values, color in series:
        points = [
            (x, bottom - (v / ticks[-1]) * (bottom - top)) for x, v in zip(xs, values, strict=True)
        ]
        path = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
        parts.append(
            f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" '
            f'points="{path}"/>'
        )
        for (x, y), label, value in zip(points, labels, values, strict=True):
            parts.append(
                f'<circle class="point" cx="{_n(x)}" cy="{_n(y)}" r="3" fill="{color}">'
                f"<title>{escape(label)} {escape(name)}: {fmt_number(value)}</title></circle>"
            )
    parts += _x_labels(labels, xs, bottom + 18)
    parts.append(
        f'<line x1="{_n(left)}" y1="{_n(bottom)}" x2="{_n(right)}" y2="{_n(bottom)}" '
        f'stroke="{AXIS}"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def stacked_columns(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    chart_id: str,
    title: str,
    width: float = 760,
    height: float = 260,
) -> str:
    """Vertical columns, one per label, each stacked from the series in order."""
    left, right, top, bottom = 64.0, width - 16, 30.0, height - 30
    totals = [sum(values[i] for _, values, _ in series) for i in range(len(labels))]
    ticks = nice_ticks(max(totals or [0.0]))
    slot = (right - left) / max(1, len(labels))
    col = max(2.0, min(40.0, slot * 0.7))
    parts = _open(chart_id, title, width, height)
    parts += _y_axis(ticks, left, right, top, bottom)
    parts += _legend([(name, color) for name, _, color in series], left, 16, right)[0]
    xs = []
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - col) / 2
        xs.append(x + col / 2)
        base = bottom
        for name, values, color in series:
            value = values[i]
            if not value:
                continue
            h = (value / ticks[-1]) * (bottom - top)
            base -= h
            parts.append(
                f'<rect class="bar" x="{_n(x)}" y="{_n(base)}" width="{_n(col)}" '
                f'height="{_n(h)}" fill="{color}"><title>{escape(label)} {escape(name)}: '
                f"{fmt_number(value)}</title></rect>"
            )
    parts += _x_labels(labels, xs, bottom + 18)
    parts.append(
        f'<line x1="{_n(left)}" y1="{_n(bottom)}" x2="{_n(right)}" y2="{_n(bottom)}" '
        f'stroke="{AXIS}"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def stacked_bars(
    rows: Sequence[tuple[str, Sequence[float]]],
    segments: Sequence[tuple[str, str]],
    *,
    chart_id: str,
    title: str,
    width: float = 760,
) -> str:
    """Horizontal 100% bars, one per row, split into the segments' shares."""
    bar, gap = 18.0, 6.0
    left = min(MAX_LEFT, 12 + CHAR_WIDTH * max([len(_label(lbl)) for lbl, _ in rows] or [4]))
    right = 70.0
    span = width - left - right
    legend, last_row = _legend(segments, 8, 16, width - 8)
    top = last_row + 14
    height = top + len(rows) * (bar + gap) + 8
    parts = _open(chart_id, title, width, height)
    parts += legend
    for i, (label, counts) in enumerate(rows):
        y = top + i * (bar + gap)
        total = sum(counts)
        parts.append(
            f'<text x="{_n(left - 8)}" y="{_n(y + bar - 5)}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(_label(label))}</text>"
        )
        x = left
        for (name, color), count in zip(segments, counts, strict=True):
            if not count:
                continue
            w = span * count / total
            parts.append(
                f'<rect class="bar" x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(bar)}" '
                f'fill="{color}"><title>{escape(label)} {escape(name)}: {fmt_number(count)} '
                f"({count / total:.0%})</title></rect>"
            )
            x += w
        parts.append(
            f'<text x="{_n(left + span + 6)}" y="{_n(y + bar - 5)}">{fmt_number(total)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
