"""The SVG charts: well-formed, accessible, drawn to scale, and suppressed values as marked gaps."""

import math
import re
import xml.etree.ElementTree as ET

import pytest

from app.services import charts
from app.services.charts import Bar, Series

NS = {"svg": "http://www.w3.org/2000/svg"}
SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if cls in (e.get("class") or "").split()]


def bars_svg(bars: list[Bar], target: float | None = None) -> ET.Element:
    return parse(
        charts.bar_chart(
            chart_id="bars",
            title="Referrals <by> PCN",
            description="A description & more",
            bars=bars,
            y_label="Per 1,000",
            x_label="PCN",
            target=target,
        )
    )


def baseline_of(root: ET.Element) -> float:
    """The x axis line's y (the bars' baseline)."""
    axis = [e for e in root.findall("svg:line", NS) if e.get("y1") == e.get("y2")]
    return float(axis[0].get("y1", "nan"))


def y_for(root: ET.Element, value: float) -> float:
    """Where the y axis puts `value`, from two of its tick labels."""
    axis = by_class(root, "g", "y-axis")[0]
    ticks = [
        (float(t.text.replace(",", "")), float(line.get("y1", "nan")))
        for line, t in zip(axis.findall("svg:line", NS), axis.findall("svg:text", NS), strict=False)
        if t.text and t.get("class") != "axis-label"
    ]
    (v0, y0), (v1, y1) = ticks[0], ticks[-1]
    return y0 + (value - v0) * (y1 - y0) / (v1 - v0)


def test_bar_chart_is_an_accessible_image_with_its_own_title_and_description() -> None:
    root = bars_svg([Bar("U1", "North PCN", 2.0)])

    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "bars-title bars-desc"
    title = root.find("svg:title", NS)
    desc = root.find("svg:desc", NS)
    assert title is not None
    assert desc is not None
    assert (title.get("id"), title.text) == ("bars-title", "Referrals <by> PCN")
    assert (desc.get("id"), desc.text) == ("bars-desc", "A description & more")


def test_bar_chart_draws_one_bar_per_value_to_scale_with_labels_and_tooltips() -> None:
    root = bars_svg([Bar("U1", "North PCN", 4.0), Bar("U2", "South PCN", 1.0)])

    rects = by_class(root, "rect", "bar")
    assert [r.get("data-value") for r in rects] == ["4.0", "1.0"]
    heights = [float(r.get("height", "nan")) for r in rects]
    assert heights[0] == pytest.approx(4 * heights[1], rel=0.01)
    base = baseline_of(root)
    for rect, value in zip(rects, (4.0, 1.0), strict=True):
        top = float(rect.get("y", "nan"))
        assert top + float(rect.get("height", "nan")) == pytest.approx(base, abs=0.1)
        assert top == pytest.approx(y_for(root, value), abs=0.2)
    tooltips = [r.find("svg:title", NS) for r in rects]
    assert [t.text if t is not None else None for t in tooltips] == [
        "North PCN (U1): 4",
        "South PCN (U2): 1",
    ]
    labels = [t.text for t in by_class(root, "text", "x-label")]
    assert labels == ["U1", "U2"]
    axis_labels = [t.text for t in by_class(root, "text", "axis-label")]
    assert axis_labels == ["Per 1,000", "PCN"]


def test_suppressed_bar_is_a_marked_gap_never_a_zero_bar() -> None:
    root = bars_svg([Bar("U1", "North PCN", 3.0), Bar("U2", "South PCN", None)])

    assert len(by_class(root, "rect", "bar")) == 1
    [gap] = by_class(root, "g", "suppressed")
    title = gap.find("svg:title", NS)
    assert title is not None
    assert title.text == "South PCN (U2): suppressed (small number)"
    assert [t.text for t in gap.findall("svg:text", NS)] == ["S"]
    legend = " ".join(t.text or "" for t in by_class(root, "g", "legend")[0].iter(f"{SVG}text"))
    assert "S: suppressed (small number)" in legend


def test_bar_with_no_figure_is_an_unmarked_gap() -> None:
    root = bars_svg([Bar("U1", "North PCN", 3.0), Bar("U2", "South PCN", math.nan)])

    assert len(by_class(root, "rect", "bar")) == 1
    assert by_class(root, "g", "suppressed") == []
    assert len(by_class(root, "g", "no-figure")) == 1


def test_target_line_is_horizontal_at_the_target_value_and_in_the_legend() -> None:
    root = bars_svg([Bar("U1", "North PCN", 2.0), Bar("U2", "South PCN", 1.0)], target=3.0)

    [group] = by_class(root, "g", "target")
    line = group.find("svg:line", NS)
    assert line is not None
    assert line.get("y1") == line.get("y2")
    assert float(line.get("y1", "nan")) == pytest.approx(y_for(root, 3.0), abs=0.2)
    assert float(line.get("x2", "0")) > float(line.get("x1", "0"))
    legend = " ".join(t.text or "" for t in by_class(root, "g", "legend")[0].iter(f"{SVG}text"))
    assert "ICB target: 3" in legend


def test_axis_reaches_above_the_target_when_every_bar_is_below_it() -> None:
    root = bars_svg([Bar("U1", "North PCN", 0.5)], target=12.0)

    assert y_for(root, 12.0) >= float(root.get("viewBox", "0 0 0 0").split()[1])
    [group] = by_class(root, "g", "target")
    line = group.find("svg:line", NS)
    assert line is not None
    assert float(line.get("y1", "nan")) > 0


def test_bar_chart_without_target_has_no_target_line() -> None:
    root = bars_svg([Bar("U1", "North PCN", 2.0)])

    assert by_class(root, "g", "target") == []


def test_text_is_escaped() -> None:
    svg = charts.bar_chart(
        chart_id="esc",
        title="<script>alert(1)</script>",
        description='"quoted"',
        bars=[Bar("<b>", "A & B", 1.0)],
        y_label="y",
        x_label="x",
    )

    assert "<script>" not in svg
    assert "<b>" not in svg
    parse(svg)


def test_chart_id_must_be_a_safe_xml_id() -> None:
    with pytest.raises(ValueError, match="safe XML id"):
        charts.bar_chart(
            chart_id='x" onload="1',
            title="t",
            description="d",
            bars=[],
            y_label="y",
            x_label="x",
        )


def lines_svg(series: list[Series], labels: list[str]) -> ET.Element:
    return parse(
        charts.line_chart(
            chart_id="trend",
            title="Trend",
            description="Monthly",
            x_labels=labels,
            series=series,
            y_label="Per 1,000",
            x_label="Month",
        )
    )


MONTHS = ["Jan 2026", "Feb 2026", "Mar 2026", "Apr 2026"]


def path_segments(group: ET.Element) -> list[list[tuple[float, float]]]:
    path = group.find("svg:path", NS)
    assert path is not None
    segments: list[list[tuple[float, float]]] = []
    for command, x, y in re.findall(r"([ML])([\d.]+) ([\d.]+)", path.get("d", "")):
        if command == "M":
            segments.append([])
        segments[-1].append((float(x), float(y)))
    return segments


def test_line_chart_draws_one_line_per_series_through_every_value() -> None:
    root = lines_svg(
        [Series("Pharmacy First", [1.0, 2.0, 3.0, 4.0]), Series("DMS", [0.5, 0.5, 0.0, 1.0])],
        MONTHS,
    )

    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "trend-title trend-desc"
    groups = by_class(root, "g", "series")
    assert [g.get("data-series") for g in groups] == ["Pharmacy First", "DMS"]
    [first] = path_segments(groups[0])
    assert len(first) == 4
    assert [y for _, y in first] == pytest.approx([y_for(root, v) for v in (1, 2, 3, 4)], abs=0.2)
    xs = [x for x, _ in first]
    assert xs == sorted(xs)
    points = by_class(groups[1], "g", "point")
    assert [p.get("data-value") for p in points] == ["0.5", "0.5", "0.0", "1.0"]
    labels = [t.text for t in by_class(root, "text", "x-label")]
    assert labels == MONTHS
    legend = [t.text for t in by_class(root, "g", "legend")[0].iter(f"{SVG}text")]
    assert legend == ["Pharmacy First", "DMS"]


def test_series_differ_by_dash_and_marker_not_only_colour() -> None:
    root = lines_svg([Series("A", [1.0, 2.0]), Series("B", [2.0, 1.0])], MONTHS[:2])

    paths = [g.find("svg:path", NS) for g in by_class(root, "g", "series")]
    assert paths[0] is not None
    assert paths[1] is not None
    assert paths[0].get("stroke-dasharray") != paths[1].get("stroke-dasharray")
    first_marker = by_class(root, "g", "point")[0][1].tag
    last_marker = by_class(root, "g", "point")[-1][1].tag
    assert first_marker != last_marker


def test_suppressed_month_breaks_the_line_and_is_marked() -> None:
    root = lines_svg([Series("Pharmacy First", [1.0, None, 3.0, 4.0])], MONTHS)

    [group] = by_class(root, "g", "series")
    segments = path_segments(group)
    assert [len(s) for s in segments] == [1, 2]
    assert len(by_class(group, "g", "point")) == 3
    [gap] = by_class(group, "g", "suppressed")
    title = gap.find("svg:title", NS)
    assert title is not None
    assert title.text == "Pharmacy First, Feb 2026: suppressed (small number)"
    zero_y = y_for(root, 0.0)
    for segment in segments:
        assert all(y != pytest.approx(zero_y) for _, y in segment)


def test_series_length_must_match_the_labels() -> None:
    with pytest.raises(ValueError, match="has 1 values for 4 labels"):
        lines_svg([Series("A", [1.0])], MONTHS)


def test_single_month_is_centred() -> None:
    root = lines_svg([Series("A", [2.0])], ["Jan 2026"])

    [point] = by_class(root, "g", "point")
    marker = point[1]
    assert float(marker.get("cx", "0")) == pytest.approx(
        (charts.MARGIN_LEFT + charts.WIDTH - charts.MARGIN_RIGHT) / 2
    )


@pytest.mark.parametrize(
    ("maximum", "expected"),
    [
        (0.0, [0.0, 1.0]),
        (math.nan, [0.0, 1.0]),
        (10.0, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
        (7.3, [0.0, 2.0, 4.0, 6.0, 8.0]),
        (0.042, [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]),
        (1234.0, [0.0, 250.0, 500.0, 750.0, 1000.0, 1250.0]),
    ],
)
def test_nice_ticks_start_at_zero_and_cover_the_maximum(
    maximum: float, expected: list[float]
) -> None:
    assert charts.nice_ticks(maximum) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [(1234.0, None, "1,234"), (2.25, None, "2.2"), (0.0123, None, "0.012"), (0.5, 2, "0.50")],
)
def test_format_number(value: float, decimals: int | None, text: str) -> None:
    assert charts.format_number(value, decimals) == text


def test_a_long_legend_wraps_and_the_plot_starts_below_it() -> None:
    names = [
        "Discharge Medicines Service",
        "Blood Pressure Check",
        "Pharmacy First",
        "Contraception",
    ]
    short = lines_svg([Series("A", [1.0])], ["Jan 2026"])
    long = lines_svg(
        [Series(name, [1.0]) for name in [*names, "Another long series name"]], ["Jan 2026"]
    )

    offsets = [g.get("transform") for g in by_class(long, "g", "legend")[0].findall("svg:g", NS)]
    assert offsets[0] == "translate(0 0)"
    assert offsets[-1] is not None
    assert offsets[-1].endswith(" 20)")
    assert y_for(long, 1.0) > y_for(short, 1.0)
