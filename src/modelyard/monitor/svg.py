"""Tiny inline-SVG charts for the HTML report: a file that opens anywhere, with no script and no network."""

from __future__ import annotations

from html import escape

REF, CUR, OVER, OK = "#94a3b8", "#2563eb", "#dc2626", "#16a34a"


def hbar_chart(
    labels: list[str],
    values: list[float | None],
    *,
    threshold: float | None = None,
    title: str = "",
    width: int = 560,
) -> str:
    """Horizontal bars (one per label), red past ``threshold``, with the threshold drawn as a dashed line."""
    row, left, pad = 18, 170, 8
    height = pad * 2 + 22 + row * len(labels)
    top = max([v for v in values if v is not None] + [threshold or 0, 1e-9]) * 1.1
    scale = (width - left - 60) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f'<text x="{pad}" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 26 + i * row
        parts.append(
            f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">{escape(label)}</text>'
        )
        if value is None:
            parts.append(f'<text x="{left + 4}" y="{y + 12}" font-size="11" fill="#888">no data</text>')
            continue
        color = OVER if threshold is not None and value > threshold else OK
        w = max(value * scale, 1)
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}" font-size="10">{value:.3f}</text>')
    if threshold is not None:
        x = left + threshold * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="22" x2="{x:.1f}" y2="{height - pad}" stroke="{OVER}" '
            f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{height - 2}" font-size="10" '
            f'fill="{OVER}">{threshold:g}</text>'
        )
    return "".join(parts) + "</svg>"


def histogram_pair(
    labels: list[str],
    reference: list[float],
    current: list[float],
    *,
    title: str = "",
    width: int = 360,
    height: int = 170,
) -> str:
    """Reference (grey) and current (blue) bin fractions side by side."""
    n = max(len(labels), 1)
    left, bottom, top_pad = 8, 34, 22
    plot_h = height - bottom - top_pad
    top = max([*reference, *current, 1e-9])
    slot = (width - 2 * left) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f'<text x="{left}" y="15" font-size="12" font-weight="600">{escape(title)}</text>',
        f'<text x="{width - 8}" y="15" font-size="10" text-anchor="end"><tspan fill="{REF}">■ reference'
        f'</tspan> <tspan fill="{CUR}">■ now</tspan></text>',
    ]
    for i, label in enumerate(labels):
        x = left + i * slot
        for j, (vals, color) in enumerate(((reference, REF), (current, CUR))):
            if i < len(vals):
                h = vals[i] / top * plot_h
                parts.append(
                    f'<rect x="{x + 1 + j * slot * 0.45:.1f}" y="{top_pad + plot_h - h:.1f}" '
                    f'width="{slot * 0.43:.1f}" height="{h:.1f}" fill="{color}"><title>'
                    f"{escape(label)}: {vals[i]:.1%}</title></rect>"
                )
        if n <= 6 or i in (0, n - 1):  # many bins: label the two ends only, the tooltips have the rest
            short = label if len(label) <= 14 else label[:13] + "…"
            anchor = "middle" if n <= 6 else ("start" if i == 0 else "end")
            tx = x + slot / 2 if n <= 6 else (x if i == 0 else x + slot)
            parts.append(
                f'<text x="{tx:.1f}" y="{height - bottom + 12}" font-size="9" '
                f'text-anchor="{anchor}">{escape(short)}</text>'
            )
    parts.append(
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - left}" y2="{top_pad + plot_h}" '
        'stroke="#ccc"/>'
    )
    return "".join(parts) + "</svg>"


def waterfall_chart(
    base: float,
    steps: list[tuple[str, float]],
    *,
    title: str = "",
    width: int = 640,
) -> str:
    """A waterfall: from ``base``, one bar per (label, contribution) in the given order, to the final value.

    Positive contributions are green, negative red; the final bar (base + every contribution) is blue.
    """
    row, left, right, pad = 20, 230, 80, 8
    height = pad * 2 + 24 + row * (len(steps) + 2)
    points = [base]
    for _, value in steps:
        points.append(points[-1] + value)
    low, high = min(*points, base), max(*points, base)
    span = (high - low) or max(abs(high), 1.0)
    scale = (width - left - right) / span

    def x(v: float) -> float:
        return left + (v - low) * scale

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f'<text x="{pad}" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
    ]

    def bar(i: int, label: str, start: float, end: float, color: str, text: str) -> None:
        y = 26 + i * row
        x0, x1 = sorted((x(start), x(end)))
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1):.1f}" height="{row - 6}" '
                     f'fill="{color}"><title>{escape(label)}: {escape(text)}</title></rect>')
        parts.append(f'<text x="{x1 + 4:.1f}" y="{y + 13}" font-size="10">{escape(text)}</text>')

    bar(0, "base value", low if low <= base else base, base, REF, f"{base:.6g}")
    for i, ((label, value), start) in enumerate(zip(steps, points, strict=False), start=1):
        bar(i, label, start, start + value, OK if value >= 0 else OVER, f"{value:+.4g}")
    bar(len(steps) + 1, "prediction", low if low <= points[-1] else points[-1], points[-1], CUR,
        f"{points[-1]:.6g}")
    return "".join(parts) + "</svg>"
