"""Charts as SVG strings, drawn on the server: pure functions, no I/O, no scripts, no styles.

Colours and dashes are SVG presentation attributes (not `style`), so the charts render under a
Content-Security-Policy without 'unsafe-inline' and also as standalone files. Every chart is an
accessible image: `role="img"` labelled by its own `<title>` and `<desc>`; each bar and point has
a `<title>` tooltip; the page puts a table alternative after it.

A value of None is suppressed (a small number withheld by the disclosure rule): it is drawn as a
marked gap (a hatched band and an "S"), never as a zero-height bar or a point on the axis. A NaN
value has no figure for another reason (e.g. no registered population) and is an unmarked gap.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 960
BAR_HEIGHT = 400
LINE_HEIGHT = 360
MARGIN_LEFT = 72
MARGIN_RIGHT = 24
MARGIN_TOP = 56
BAR_MARGIN_BOTTOM = 96
LINE_MARGIN_BOTTOM = 64

INK = "#212b32"
GRID = "#d8dde0"
BAR_FILL = "#005eb8"
TARGET = "#d5281b"
SUPPRESSED = "#768692"
# Colour, dash pattern and marker differ per series, so no series is told apart by colour alone.
SERIES_STYLES: tuple[tuple[str, str, str], ...] = (
    ("#005eb8", "", "circle"),
    ("#007f3b", "8 4", "square"),
    ("#ae2573", "2 4", "triangle"),
    ("#ed8b00", "10 4 2 4", "diamond"),
    ("#330072", "4 2", "circle"),
)

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,40}$")


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # short axis label, e.g. an ODS code
    name: str  # full name for the tooltip
    value: float | None  # None: suppressed; NaN: no figure


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x label; None: suppressed; NaN: no figure


def _shown(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round axis ticks from 0 to at least `maximum` (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not maximum > 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    steps = math.ceil(maximum / step - 1e-9)
    return [round(i * step, 10) for i in range(steps + 1)]


def decimals_for(step: float) -> int:
    """The fewest decimal places that show a multiple of `step` exactly (at most 6)."""
    return next((d for d in range(7) if abs(round(step, d) - step) < 1e-9), 6)


def format_number(value: float, decimals: int | None = None) -> str:
    """A tick or value label: to the given places, or to two significant places below 1 (one
    place from 1, none for whole numbers)."""
    if decimals is None:
        if float(value).is_integer():
            decimals = 0
        elif abs(value) >= 1:
            decimals = 1
        else:
            decimals = max(2, 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def _text(value: str) -> str:
    return escape(value, quote=True)


def _f(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _open(*, chart_id: str, kind: str, height: int, title: str, description: str) -> list[str]:
    if not _ID.match(chart_id):
        raise ValueError(f"chart id {chart_id!r} is not a safe XML id")
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" id="{chart_id}" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" font-family="Arial, sans-serif" '
        f'font-size="13" fill="{INK}">',
        f'<title id="{chart_id}-title">{_text(title)}</title>',
        f'<desc id="{chart_id}-desc">{_text(description)}</desc>',
        "<defs>"
        f'<pattern id="{chart_id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{SUPPRESSED}" stroke-width="2"/>'
        "</pattern></defs>",
        f'<text class="chart-title" x="{MARGIN_LEFT}" y="22" font-size="16" '
        f'font-weight="bold">{_text(title)}</text>',
    ]


def _y_axis(
    *,
    ticks: list[float],
    y_of: "_Scale",
    plot_right: float,
    label: str,
    plot_top: float,
    bottom: float,
) -> list[str]:
    parts = ['<g class="y-axis">']
    decimals = decimals_for(ticks[1] - ticks[0])
    for tick in ticks:
        y = _f(y_of(tick))
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{_f(plot_right)}" y1="{y}" y2="{y}" stroke="{GRID}"/>'
            f'<text x="{MARGIN_LEFT - 8}" y="{y}" dy="4" text-anchor="end">'
            f"{format_number(tick, decimals)}</text>"
        )
    middle = _f((plot_top + bottom) / 2)
    parts.append(
        f'<text class="axis-label" x="16" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 16 {middle})">{_text(label)}</text>'
    )
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{_f(plot_top)}" y2="{_f(bottom)}" '
        f'stroke="{INK}"/>'
    )
    parts.append("</g>")
    return parts


class _Scale:
    """Maps a value to a y coordinate: 0 at the baseline, the last tick at the top."""

    def __init__(self, *, top_value: float, plot_top: float, baseline: float) -> None:
        self.top_value = top_value
        self.plot_top = plot_top
        self.baseline = baseline

    def __call__(self, value: float) -> float:
        span = self.baseline - self.plot_top
        return self.baseline - span * (value / self.top_value)


LEGEND_ROW = 20


def _legend(entries: list[tuple[str, str]], *, y: int) -> tuple[str, int]:
    """Legend items left to right, wrapping onto more rows when the width runs out: (swatch SVG
    drawn at x 0 to 18, label). Returns the SVG and the y of the last row."""
    parts = [f'<g class="legend" transform="translate({MARGIN_LEFT} {y})">']
    x = row = 0
    for swatch, label in entries:
        width = 26 + round(6.5 * len(label)) + 20
        if x and x + width > WIDTH - MARGIN_LEFT - MARGIN_RIGHT:
            x, row = 0, row + 1
        parts.append(
            f'<g transform="translate({x} {row * LEGEND_ROW})">{swatch}'
            f'<text x="26" y="4" dy="4">{_text(label)}</text></g>'
        )
        x += width
    parts.append("</g>")
    return "".join(parts), y + row * LEGEND_ROW


def _hatch_swatch(chart_id: str) -> tuple[str, str]:
    return (
        f'<rect x="0" y="-4" width="18" height="14" fill="url(#{chart_id}-hatch)" '
        f'stroke="{SUPPRESSED}"/>',
        "S: suppressed (small number)",
    )


def bar_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    bars: Sequence[Bar],
    y_label: str,
    x_label: str,
    target: float | None = None,
    target_label: str = "ICB target",
    decimals: int | None = None,
) -> str:
    """Vertical bars in the order given, with an optional horizontal target line."""
    baseline = BAR_HEIGHT - BAR_MARGIN_BOTTOM
    plot_right = WIDTH - MARGIN_RIGHT
    values = [bar.value for bar in bars if bar.value is not None and _shown(bar.value)]
    ticks = nice_ticks(max([*values, target or 0.0, 0.0]))
    parts = _open(
        chart_id=chart_id, kind="bar-chart", height=BAR_HEIGHT, title=title, description=description
    )
    legend = [(f'<rect x="0" y="-4" width="18" height="14" fill="{BAR_FILL}"/>', y_label)]
    if target is not None:
        legend.append(
            (
                f'<line x1="0" x2="18" y1="3" y2="3" stroke="{TARGET}" stroke-width="3" '
                'stroke-dasharray="6 3"/>',
                f"{target_label}: {format_number(target, decimals)}",
            )
        )
    if any(bar.value is None for bar in bars):
        legend.append(_hatch_swatch(chart_id))
    legend_svg, legend_bottom = _legend(legend, y=40)
    parts.append(legend_svg)
    plot_top = legend_bottom + MARGIN_TOP - 24
    y_of = _Scale(top_value=ticks[-1], plot_top=plot_top, baseline=baseline)
    parts += _y_axis(
        ticks=ticks,
        y_of=y_of,
        plot_right=plot_right,
        label=y_label,
        plot_top=plot_top,
        bottom=baseline,
    )
    band = (plot_right - MARGIN_LEFT) / max(len(bars), 1)
    width = min(band * 0.7, 64.0)
    parts.append('<g class="bars">')
    for index, bar in enumerate(bars):
        left = MARGIN_LEFT + index * band
        centre = left + band / 2
        name = f"{bar.name} ({bar.label})" if bar.name != bar.label else bar.label
        if bar.value is None:
            parts.append(
                f'<g class="suppressed"><title>{_text(name)}: suppressed (small number)</title>'
                f'<rect x="{_f(centre - width / 2)}" y="{_f(plot_top)}" '
                f'width="{_f(width)}" height="{_f(baseline - plot_top)}" '
                f'fill="url(#{chart_id}-hatch)" opacity="0.35"/>'
                f'<text x="{_f(centre)}" y="{_f(baseline - 6)}" text-anchor="middle" '
                f'font-weight="bold" fill="{SUPPRESSED}">S</text></g>'
            )
        elif math.isnan(bar.value):
            parts.append(f'<g class="no-figure"><title>{_text(name)}: no figure</title></g>')
        else:
            top = y_of(bar.value)
            parts.append(
                f'<rect class="bar" x="{_f(centre - width / 2)}" y="{_f(top)}" '
                f'width="{_f(width)}" height="{_f(baseline - top)}" fill="{BAR_FILL}" '
                f'data-value="{bar.value}"><title>{_text(name)}: '
                f"{format_number(bar.value, decimals)}</title></rect>"
            )
        parts.append(
            f'<text class="x-label" x="{_f(centre)}" y="{baseline + 12}" text-anchor="end" '
            f'font-size="11" transform="rotate(-60 {_f(centre)} {baseline + 12})">'
            f"{_text(bar.label)}</text>"
        )
    parts.append("</g>")
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{_f(plot_right)}" y1="{baseline}" y2="{baseline}" '
        f'stroke="{INK}"/>'
    )
    if target is not None:
        y = _f(y_of(target))
        parts.append(
            f'<g class="target"><title>{_text(target_label)}: {format_number(target, decimals)}</title>'
            f'<line x1="{MARGIN_LEFT}" x2="{_f(plot_right)}" y1="{y}" y2="{y}" '
            f'stroke="{TARGET}" stroke-width="3" stroke-dasharray="6 3" data-value="{target}"/>'
            f"</g>"
        )
    parts.append(
        f'<text class="axis-label" x="{_f((MARGIN_LEFT + plot_right) / 2)}" '
        f'y="{BAR_HEIGHT - 6}" text-anchor="middle">{_text(x_label)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f'<rect x="{_f(x - 4)}" y="{_f(y - 4)}" width="8" height="8" fill="{colour}"/>'
    if shape == "triangle":
        points = f"{_f(x)},{_f(y - 5)} {_f(x + 5)},{_f(y + 4)} {_f(x - 5)},{_f(y + 4)}"
        return f'<polygon points="{points}" fill="{colour}"/>'
    if shape == "diamond":
        points = f"{_f(x)},{_f(y - 5)} {_f(x + 5)},{_f(y)} {_f(x)},{_f(y + 5)} {_f(x - 5)},{_f(y)}"
        return f'<polygon points="{points}" fill="{colour}"/>'
    return f'<circle cx="{_f(x)}" cy="{_f(y)}" r="4" fill="{colour}"/>'


def _segments(points: Sequence[tuple[float, float] | None]) -> str:
    """Path data that breaks at every missing point, so a suppressed value is a gap in the line."""
    commands: list[str] = []
    pen_down = False
    for point in points:
        if point is None:
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{_f(point[0])} {_f(point[1])}")
        pen_down = True
    return " ".join(commands)


def line_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    x_label: str,
    decimals: int | None = None,
) -> str:
    """One line per series over the x labels (e.g. months), with markers at each value."""
    for one in series:
        if len(one.values) != len(x_labels):
            raise ValueError(
                f"series {one.name!r} has {len(one.values)} values for {len(x_labels)} labels"
            )
    baseline = LINE_HEIGHT - LINE_MARGIN_BOTTOM
    plot_right = WIDTH - MARGIN_RIGHT
    values = [v for one in series for v in one.values if v is not None and _shown(v)]
    ticks = nice_ticks(max([*values, 0.0]))
    inset = 24
    span = plot_right - MARGIN_LEFT - 2 * inset
    step = span / max(len(x_labels) - 1, 1)

    def x_of(index: int) -> float:
        if len(x_labels) == 1:
            return MARGIN_LEFT + inset + span / 2
        return MARGIN_LEFT + inset + index * step

    parts = _open(
        chart_id=chart_id,
        kind="line-chart",
        height=LINE_HEIGHT,
        title=title,
        description=description,
    )
    legend: list[tuple[str, str]] = []
    for index, one in enumerate(series):
        colour, dash, shape = SERIES_STYLES[index % len(SERIES_STYLES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        legend.append(
            (
                f'<line x1="0" x2="18" y1="3" y2="3" stroke="{colour}" stroke-width="3"'
                f"{dash_attr}/>{_marker(shape, 9, 3, colour)}",
                one.name,
            )
        )
    if any(v is None for one in series for v in one.values):
        legend.append(_hatch_swatch(chart_id))
    legend_svg, legend_bottom = _legend(legend, y=40)
    parts.append(legend_svg)
    plot_top = legend_bottom + MARGIN_TOP - 24
    y_of = _Scale(top_value=ticks[-1], plot_top=plot_top, baseline=baseline)
    parts += _y_axis(
        ticks=ticks,
        y_of=y_of,
        plot_right=plot_right,
        label=y_label,
        plot_top=plot_top,
        bottom=baseline,
    )
    every = max(1, math.ceil(len(x_labels) / 12))
    parts.append('<g class="x-axis">')
    for index, label in enumerate(x_labels):
        if index % every == 0:
            parts.append(
                f'<text class="x-label" x="{_f(x_of(index))}" y="{baseline + 18}" '
                f'text-anchor="middle" font-size="11">{_text(label)}</text>'
            )
    parts.append(
        f'<line x1="{MARGIN_LEFT}" x2="{_f(plot_right)}" y1="{baseline}" y2="{baseline}" '
        f'stroke="{INK}"/></g>'
    )
    for index, one in enumerate(series):
        colour, dash, shape = SERIES_STYLES[index % len(SERIES_STYLES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        points = [
            (x_of(i), y_of(value)) if value is not None and _shown(value) else None
            for i, value in enumerate(one.values)
        ]
        parts.append(f'<g class="series" data-series="{_text(one.name)}">')
        parts.append(
            f'<path class="line" d="{_segments(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="2.5"{dash_attr}/>'
        )
        for i, (label, value) in enumerate(zip(x_labels, one.values, strict=True)):
            x = x_of(i)
            if value is None:
                parts.append(
                    f'<g class="suppressed"><title>{_text(one.name)}, {_text(label)}: '
                    f"suppressed (small number)</title>"
                    f'<text x="{_f(x)}" y="{_f(baseline - 6 - 14 * index)}" text-anchor="middle" '
                    f'font-weight="bold" fill="{colour}">S</text></g>'
                )
                continue
            if math.isnan(value):
                continue
            parts.append(
                f'<g class="point" data-value="{value}"><title>{_text(one.name)}, '
                f"{_text(label)}: {format_number(value, decimals)}</title>"
                f"{_marker(shape, x, y_of(value), colour)}</g>"
            )
        parts.append("</g>")
    parts.append(
        f'<text class="axis-label" x="{_f((MARGIN_LEFT + plot_right) / 2)}" '
        f'y="{LINE_HEIGHT - 12}" text-anchor="middle">{_text(x_label)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
