"""Plain inline SVG pictures for the customer page: no script, no chart library. Each picture has a
title and a description for screen readers; the page shows the same numbers in a table beside it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from html import escape

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 16, 28


@dataclass(frozen=True)
class Bar:
    label: str  # e.g. "02-14"
    value: float
    title: str  # tooltip / accessible text


def _axis_max(values: list[float]) -> float:
    top = max([v for v in values if v > 0], default=0.0)
    if top <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5, 10):
        magnitude = 10 ** (len(str(int(top))) - 1)
        candidate = step * magnitude
        if candidate >= top:
            return float(candidate)
    return float(top)


def bar_chart(bars: list[Bar], *, title: str, unit: str, chart_id: str) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _axis_max([b.value for b in bars])
    n = max(len(bars), 1)
    slot = plot_w / n
    bar_w = max(2.0, slot * 0.7)
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-d">{escape(_describe(bars, unit))}</desc>',
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#d0d4da" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#4a5160">{_num(top * fraction)}</text>')
    label_every = max(1, n // 10)
    for index, bar in enumerate(bars):
        h = 0 if top <= 0 else plot_h * max(bar.value, 0) / top
        x = LEFT + index * slot + (slot - bar_w) / 2
        parts.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="#2f6fb3">'
                     f'<title>{escape(bar.title)}</title></rect>')
        if index % label_every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle" font-size="10" fill="#4a5160">{escape(bar.label)}</text>')
    parts.append(f'<text x="{LEFT}" y="11" font-size="11" fill="#4a5160">{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _describe(bars: list[Bar], unit: str) -> str:
    if not bars:
        return "No data."
    total = sum(b.value for b in bars)
    peak = max(bars, key=lambda b: b.value)
    return f"{len(bars)} days, total {_num(total)} {unit}, highest {_num(peak.value)} {unit} on {peak.label}."


def _num(value: float) -> str:
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.2f}"


@dataclass(frozen=True)
class BalancePoint:
    at: datetime
    balance_cents: int  # open amount after this event
    kind: str  # invoice | payment | credit | refund | chargeback
    label: str
    amount_cents: int = 0  # the move's size (signed: what it changed the balance by)


def balance_chart(points: list[BalancePoint], *, title: str, chart_id: str) -> str:
    """The open balance over time as a step line; payments marked as green dots, invoices as blue squares, credit
    notes as purple dots, refunds (orange) and chargebacks (red) as triangles: both raise the open balance again."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
    ]
    if not points:
        parts.append(f'<desc id="{escape(chart_id)}-d">No invoices or payments yet.</desc>')
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="13" fill="#4a5160">No invoices or payments yet</text></svg>')
        return "".join(parts)
    values = [p.balance_cents / 100 for p in points]
    low, high = min(0.0, min(values)), max(0.0, max(values))
    high = _axis_max([high]) if high > 0 else 1.0
    span = (high - low) or 1.0
    t0, t1 = points[0].at.timestamp(), points[-1].at.timestamp()
    t_span = (t1 - t0) or 1.0

    def xy(point: BalancePoint) -> tuple[float, float]:
        x = LEFT + plot_w * ((point.at.timestamp() - t0) / t_span if len(points) > 1 else 0.5)
        y = TOP + plot_h * (1 - (point.balance_cents / 100 - low) / span)
        return x, y

    last = points[-1]
    taken_back = [p for p in points if p.kind in ("refund", "chargeback")]
    back = f" {len(taken_back)} refund(s) or chargeback(s) raised it by {sum(p.amount_cents for p in taken_back) / 100:.2f} EUR." if taken_back else ""
    parts.append(f'<desc id="{escape(chart_id)}-d">{len(points)} events from {points[0].at:%Y-%m-%d} to {last.at:%Y-%m-%d}; '
                 f'open balance now {last.balance_cents / 100:.2f} EUR.{back}</desc>')
    zero_y = TOP + plot_h * (1 - (0 - low) / span)
    parts.append(f'<line x1="{LEFT}" y1="{zero_y:.1f}" x2="{WIDTH - RIGHT}" y2="{zero_y:.1f}" stroke="#8a919c" stroke-width="1"/>')
    for value in (low, high):
        if value == 0:
            continue
        y = TOP + plot_h * (1 - (value - low) / span)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#d0d4da" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#4a5160">{_num(value)}</text>')
    parts.append(f'<text x="{LEFT - 6}" y="{zero_y + 4:.1f}" text-anchor="end" font-size="11" fill="#4a5160">0</text>')
    path = []
    previous_y = None
    for point in points:
        x, y = xy(point)
        if previous_y is None:
            path.append(f"M{x:.1f},{y:.1f}")
        else:
            path.append(f"L{x:.1f},{previous_y:.1f} L{x:.1f},{y:.1f}")
        previous_y = y
    parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="#2f6fb3" stroke-width="2"/>')
    for point in points:
        x, y = xy(point)
        tip = escape(f"{point.at:%Y-%m-%d %H:%M} {point.label}; balance {point.balance_cents / 100:.2f} EUR")
        if point.kind == "payment":
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#2e8540"><title>{tip}</title></circle>')
        elif point.kind == "credit":
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#8a5cc2"><title>{tip}</title></circle>')
        elif point.kind in ("refund", "chargeback"):  # money given or taken back: a triangle, red for a chargeback
            colour = "#c0392b" if point.kind == "chargeback" else "#d4820a"
            parts.append(f'<path class="{point.kind}" d="M{x:.1f},{y - 6:.1f} L{x + 6:.1f},{y + 5:.1f} L{x - 6:.1f},{y + 5:.1f} Z" fill="{colour}">'
                         f'<title>{tip}</title></path>')
        else:
            parts.append(f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="#2f6fb3"><title>{tip}</title></rect>')
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 10}" font-size="10" fill="#4a5160">{points[0].at:%Y-%m-%d}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end" font-size="10" fill="#4a5160">{last.at:%Y-%m-%d}</text>')
    parts.append(f'<text x="{LEFT}" y="11" font-size="11" fill="#4a5160">EUR open</text>')
    parts.append("</svg>")
    return "".join(parts)


def day_label(day: date) -> str:
    return f"{day:%m-%d}"
