#!/usr/bin/env python3
"""Draws bench/scaling.sh's figures as SVG, with nothing but the standard
library: docs/scaling-connections.svg (buys/s and cached lookups/s against
connections, two panels) and docs/scaling-shapes.svg (buys/s and lookups/s
of each shape at 64 connections, bars).

    python3 bench/plot_scaling.py bench/scaling.json docs
"""

import json
import math
import re
import sys

W, H = 420, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 40, 40, 50


def nice_max(value):
    if value <= 0:
        return 1
    step = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def fmt(value):
    """3 significant digits: 309, 2.5k, 136k, 1M."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def label(shape):
    """A shape's name, its long numbers short (1000000 orders: 1M orders)."""
    return re.sub(r"\d{4,}", lambda m: fmt(int(m.group())), shape)


def axes(x0, title, y_label, y_max):
    out = [f'<text x="{x0 + W / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>']
    plot_h = H - TOP - BOTTOM
    for i in range(5):
        v = y_max * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + W - RIGHT}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + LEFT - 6}" y="{y + 4}" text-anchor="end" font-size="11">{fmt(v)}</text>')
    out.append(
        f'<text x="{x0 + 14}" y="{TOP + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 14} {TOP + plot_h / 2})">{y_label}</text>'
    )
    return out


def line_panel(x0, title, y_label, points):
    """points: [(connections, value)], x on a log2 scale."""
    y_max = nice_max(max(v for _, v in points) * 1.1)
    out = axes(x0, title, y_label, y_max)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    xs = [math.log2(c) for c, _ in points]
    lo, hi = min(xs), max(xs) or 1
    def px(c):
        return x0 + LEFT + plot_w * ((math.log2(c) - lo) / ((hi - lo) or 1))
    def py(v):
        return TOP + plot_h - plot_h * v / y_max
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(c):.1f},{py(v):.1f}" for i, (c, v) in enumerate(points))
    out.append(f'<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for c, v in points:
        out.append(f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="3" fill="#1f77b4"/>')
        out.append(f'<text x="{px(c):.1f}" y="{py(v) - 8:.1f}" text-anchor="middle" font-size="10">{fmt(round(v))}</text>')
        out.append(f'<text x="{px(c):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11">{c}</text>')
    out.append(f'<text x="{x0 + LEFT + plot_w / 2}" y="{H - 12}" text-anchor="middle" font-size="11">connections</text>')
    return out


def bar_panel(x0, title, y_label, bars):
    """bars: [(label, value)]."""
    y_max = nice_max(max(v for _, v in bars) * 1.1)
    out = axes(x0, title, y_label, y_max)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / len(bars)
    for i, (label, v) in enumerate(bars):
        h = plot_h * v / y_max
        x = x0 + LEFT + slot * i + slot * 0.2
        out.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{slot * 0.6:.1f}" height="{h:.1f}" fill="#1f77b4"/>')
        out.append(f'<text x="{x + slot * 0.3:.1f}" y="{TOP + plot_h - h - 5:.1f}" text-anchor="middle" font-size="10">{fmt(round(v))}</text>')
        for j, part in enumerate(label.split(", ")):
            out.append(f'<text x="{x + slot * 0.3:.1f}" y="{H - BOTTOM + 14 + 12 * j}" text-anchor="middle" font-size="10">{part}</text>')
    return out


def svg(panels):
    body = "\n".join(panels)
    width = W * 2
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" viewBox="0 0 {width} {H}" '
        f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
    )


def main():
    rows = json.load(open(sys.argv[1]))
    out_dir = sys.argv[2]
    sweep = [r for r in rows if r["shape"] == "3+3, 1 frontend"]
    sweep.sort(key=lambda r: r["connections"])
    panels = line_panel(0, "buys/s (raft 3+3)", "buys/s", [(r["connections"], r["buys"]) for r in sweep])
    panels += line_panel(W, "cached lookups/s (raft 3+3)", "lookups/s", [(r["connections"], r["lookups"]) for r in sweep])
    open(f"{out_dir}/scaling-connections.svg", "w").write(svg(panels))

    at64 = [r for r in rows if r["connections"] == 64]
    panels = bar_panel(0, "buys/s at 64 connections", "buys/s", [(label(r["shape"]), r["buys"]) for r in at64])
    panels += bar_panel(W, "cached lookups/s at 64 connections", "lookups/s", [(label(r["shape"]), r["lookups"]) for r in at64])
    open(f"{out_dir}/scaling-shapes.svg", "w").write(svg(panels))
    print(f"wrote {out_dir}/scaling-connections.svg and {out_dir}/scaling-shapes.svg")


if __name__ == "__main__":
    main()
