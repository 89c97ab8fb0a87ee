"""The perception-distortion figure of an evaluation: PSNR (x, higher = less distortion) against
NIQE and/or LPIPS (y, lower = better), one panel per set and perceptual metric (a row of NIQE
panels, then a row of LPIPS panels), drawn with PIL (no plotting dependency).

Each method is a labelled point; the HR images, which have no distortion and so no finite
PSNR, are a dashed line: at their NIQE, the level a perfectly natural result would reach, and
at LPIPS 0, their distance to themselves.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

_PANEL_W, _PANEL_H = 420, 340
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 30, 44  # margins around each panel's plot area
_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75))
# The y axes, in row order: metric -> axis label.
_LABEL_H = 12  # px between the tops of two stacked labels
_PERCEPTUAL = {"niqe": "NIQE (lower = more natural)", "lpips": "LPIPS (lower = closer to HR)"}


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= step), default=step)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _padded_range(values: list[float], pad: float) -> tuple[float, float]:
    low, high = min(values), max(values)
    span = max(high - low, 1e-6)
    return low - pad * span - 0.05, high + pad * span + 0.05


def _panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], set_name: str, by_method: dict[str, dict],
           metric: str, reference: str, colours: dict[str, tuple[int, int, int]], font: ImageFont.ImageFont) -> None:
    """PSNR against `metric` ("niqe" or "lpips") for one set; the HR line at `reference`'s NIQE, or at LPIPS 0."""
    x0, y0 = origin
    points = {m: (r["psnr"], r[metric]) for m, r in by_method.items() if m != reference and metric in r}
    hr_value = 0.0 if metric == "lpips" else by_method.get(reference, {}).get(metric)
    psnr_low, psnr_high = _padded_range([p for p, _ in points.values()], 0.15)
    values = [v for _, v in points.values()] + ([] if hr_value is None else [hr_value])
    value_low, value_high = _padded_range(values, 0.15)
    left, top = x0 + _LEFT, y0 + _TOP
    right, bottom = x0 + _PANEL_W - _RIGHT, y0 + _PANEL_H - _BOTTOM

    def at(psnr: float, value: float) -> tuple[float, float]:
        return (left + (psnr - psnr_low) / (psnr_high - psnr_low) * (right - left),
                bottom - (value - value_low) / (value_high - value_low) * (bottom - top))

    draw.text(((left + right) / 2 - 3 * len(set_name), y0 + 2), set_name, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")
    for tick in _ticks(psnr_low, psnr_high):
        x = at(tick, value_low)[0]
        draw.line((x, bottom, x, bottom + 4), fill="black")
        draw.text((x - 12, bottom + 6), f"{tick:g}", fill="black", font=font)
    for tick in _ticks(value_low, value_high):
        y = at(psnr_low, tick)[1]
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((x0 + 8, y - 6), f"{tick:g}", fill="black", font=font)
    draw.text(((left + right) / 2 - 40, bottom + 22), "PSNR (dB) ->", fill="black", font=font)
    draw.text((x0 + 4, top - 14), _PERCEPTUAL[metric], fill="black", font=font)
    if hr_value is not None:
        y = at(psnr_low, hr_value)[1]
        for x in range(int(left), int(right), 10):
            draw.line((x, y, min(x + 5, right), y), fill=(90, 90, 90))
        draw.text((right - 70, y - 14), f"HR {hr_value:.2f}", fill=(90, 90, 90), font=font)
    placed = {m: at(*p) for m, p in points.items()}
    for method, (x, y) in placed.items():
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=colours[method])
    for method, (x, y) in _label_positions(draw, placed, right, font).items():
        draw.text((x, y), _short(method), fill=colours[method], font=font)


def _short(method: str) -> str:
    return method if len(method) <= 24 else "..." + method[-21:]


def _label_positions(draw: ImageDraw.ImageDraw, points: dict[str, tuple[float, float]], right: float,
                     font: ImageFont.ImageFont) -> dict[str, tuple[float, float]]:
    """Top-left corner of each point's label: right of the point, or left of it where the text
    would cross the panel's right edge; lifted above another point's dot it would cover, and
    moved down past the label above when two would overlap."""
    positions, taken = {}, []  # taken: (left, right, top) of the labels placed so far
    for method, (x, y) in sorted(points.items(), key=lambda item: item[1][1]):
        width = draw.textlength(_short(method), font=font)
        left = x + 8 if x + 8 + width <= right else x - 8 - width
        top = y - 6

        def covers_a_dot(top: float) -> bool:
            return any(other != method and left - 5 < ox < left + width + 5 and top - 5 < oy < top + _LABEL_H + 5
                       for other, (ox, oy) in points.items())

        if covers_a_dot(top) and not covers_a_dot(top - _LABEL_H):
            top -= _LABEL_H
        for other_left, other_right, other_top in taken:
            if left < other_right and other_left < left + width and abs(top - other_top) < _LABEL_H:
                top = other_top + _LABEL_H
        taken.append((left, left + width, top))
        positions[method] = (left, top)
    return positions


def render(results: dict[str, dict[str, dict]], reference: str = "HR") -> Image.Image:
    """Figure of {method: {set: {"psnr", "niqe" and/or "lpips", ...}}} (the evaluate results):
    a row of panels per perceptual metric the methods were scored on; the `reference` method
    (the HR images, NIQE only) is drawn as a dashed line, as is LPIPS 0."""
    sets = list(dict.fromkeys(s for by_set in results.values() for s in by_set))
    methods = [m for m in results if m != reference]
    rows = [metric for metric in _PERCEPTUAL
            if any(metric in r for m in methods for r in results[m].values())]
    if not rows:
        raise ValueError(f"pd_plot.render: no method was scored on any of {', '.join(_PERCEPTUAL)}")
    colours = {m: _COLOURS[i % len(_COLOURS)] for i, m in enumerate(methods)}
    figure = Image.new("RGB", (_PANEL_W * len(sets), _PANEL_H * len(rows)), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default()
    for row, metric in enumerate(rows):
        for i, set_name in enumerate(sets):
            by_method = {m: results[m][set_name] for m in results if set_name in results[m]}
            _panel(draw, (i * _PANEL_W, row * _PANEL_H), set_name, by_method, metric, reference, colours, font)
    return figure
