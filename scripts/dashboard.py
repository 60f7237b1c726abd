#!/usr/bin/env python3
"""Renders dashboards/kafkactor.json as a PNG from recorded scrapes.

Usage: scripts/dashboard.py SAMPLES OUT.png [DASHBOARD.json]

SAMPLES is what `KAFKACTOR_SAMPLES=... cargo run --release --example
observed` writes: Prometheus' text format, each scrape after a
`# scrape <unix ms>` line. Each panel of the dashboard is drawn where its
gridPos puts it, each target evaluated over the scrapes. The queries the
dashboard uses are the only PromQL understood here:
  sum [by (labels)] (METRIC{matchers})
  sum [by (labels)] (rate|increase(METRIC{matchers}[$__rate_interval]))
  histogram_quantile(Q, sum by (le[, labels]) (rate(METRIC_bucket[$__rate_interval])))
with $__rate_interval taken as RATE_WINDOW seconds. Needs matplotlib.
"""

import json
import math
import re
import sys
from collections import defaultdict

RATE_WINDOW = 2.0

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def read_scrapes(path):
    """[(t seconds, {(name, frozenset(labels)): value})]"""
    scrapes, current, t = [], None, None
    for line in open(path):
        line = line.strip()
        if line.startswith("# scrape "):
            if current is not None:
                scrapes.append((t, current))
            t, current = int(line.split()[2]) / 1000.0, {}
        elif line and not line.startswith("#") and current is not None:
            m = SAMPLE.match(line)
            if m:
                labels = frozenset(LABEL.findall(m.group(2) or ""))
                current[(m.group(1), labels)] = float(m.group(3))
    if current is not None:
        scrapes.append((t, current))
    t0 = scrapes[0][0]
    return [(t - t0, s) for t, s in scrapes]


def select(scrape, metric, matchers):
    for (name, labels), value in scrape.items():
        if name == metric and all(dict(labels).get(k) == v for k, v in matchers):
            yield dict(labels), value


def series_at(scrapes, i, metric, matchers, fn):
    """{labels tuple: value} of METRIC at scrape i, as rate/increase or raw."""
    t, now = scrapes[i]
    if fn is None:
        return {tuple(sorted(l.items())): v for l, v in select(now, metric, matchers)}
    j = i
    while j > 0 and t - scrapes[j - 1][0] <= RATE_WINDOW + 1e-6:
        j -= 1
    if j == i:
        return {}
    t_then, then = scrapes[j]
    before = {tuple(sorted(l.items())): v for l, v in select(then, metric, matchers)}
    out = {}
    for l, v in select(now, metric, matchers):
        key = tuple(sorted(l.items()))
        delta = max(v - before.get(key, 0.0), 0.0)
        out[key] = delta / (t - t_then) if fn == "rate" else delta
    return out


def sum_by(values, by):
    out = defaultdict(float)
    for labels, v in values.items():
        d = dict(labels)
        out[tuple((k, d.get(k, "")) for k in by)] += v
    return out


def quantile(q, buckets):
    """histogram_quantile over [(le, cumulative count)]."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return math.nan
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0)
        prev_le, prev_count = le, count
    return prev_le


def parse_selector(text):
    m = re.match(r'^(\w+)(?:\{(.*)\})?(?:\[\$__rate_interval\])?$', text.strip())
    return m.group(1), LABEL.findall(m.group(2) or "")


def evaluate(expr, scrapes):
    """{legend labels tuple: [(t, value)]}"""
    out = defaultdict(list)
    hq = re.match(r'^histogram_quantile\(([\d.]+),\s*sum by \(([^)]*)\) \(rate\((.*)\)\)\)$', expr)
    if hq:
        q, by = float(hq.group(1)), [b.strip() for b in hq.group(2).split(",")]
        metric, matchers = parse_selector(hq.group(3))
        rest = [b for b in by if b != "le"]
        for i, (t, _) in enumerate(scrapes):
            grouped = sum_by(series_at(scrapes, i, metric, matchers, "rate"), by)
            per = defaultdict(list)
            for key, v in grouped.items():
                d = dict(key)
                per[tuple((k, d[k]) for k in rest)].append((float(d["le"]), v))
            for key, buckets in per.items():
                out[key].append((t, quantile(q, buckets)))
        return out
    m = re.match(r'^sum(?: by \(([^)]*)\))? \((?:(rate|increase)\((.*)\)|(.*))\)$', expr)
    if not m:
        raise ValueError(f"query not understood here: {expr}")
    by = [b.strip() for b in (m.group(1) or "").split(",") if b.strip()]
    fn, inner = m.group(2), m.group(3) or m.group(4)
    metric, matchers = parse_selector(inner)
    for i, (t, _) in enumerate(scrapes):
        for key, v in sum_by(series_at(scrapes, i, metric, matchers, fn), by).items():
            out[key].append((t, v))
    return out


def legend(fmt, key):
    d = dict(key)
    return re.sub(r'\{\{\s*(\w+)\s*\}\}', lambda m: d.get(m.group(1), ""), fmt)


def main():
    samples, png = sys.argv[1], sys.argv[2]
    dash = json.load(open(sys.argv[3] if len(sys.argv) > 3 else "dashboards/kafkactor.json"))
    scrapes = read_scrapes(samples)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, rows * 0.42), facecolor="#111217")
    grid = fig.add_gridspec(rows, 24, hspace=2.2, wspace=1.2)
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"] - 1, g["x"]:g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        ax.set_title(p["title"], color="#ccccdc", loc="left", fontsize=11)
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.6)
        unit = p["fieldConfig"]["defaults"].get("unit")
        if unit == "s":
            ax.yaxis.set_major_formatter(EngFormatter(unit="s"))
        elif unit == "ops":
            ax.yaxis.set_major_formatter(EngFormatter(unit="/s"))
        drawn = 0
        for target in p["targets"]:
            for key, points in sorted(evaluate(target["expr"], scrapes).items()):
                points = [(t, v) for t, v in points if not math.isnan(v)]
                if points and any(v for _, v in points):
                    ax.plot(*zip(*points), linewidth=1.4, label=legend(target["legendFormat"], key))
                    drawn += 1
        ax.set_xlim(0, scrapes[-1][0])
        ax.set_xlabel("seconds into the run", color="#9fa7b3", fontsize=8)
        if drawn:
            ax.legend(fontsize=7, facecolor="#181b1f", labelcolor="#ccccdc", edgecolor="#2c3235",
                      loc="upper left")
    fig.suptitle(f'{dash["title"]} - dashboards/kafkactor.json over examples/observed.rs',
                 color="#ccccdc", fontsize=13)
    fig.savefig(png, dpi=80, facecolor=fig.get_facecolor(), bbox_inches="tight")
    print(f"wrote {png}: {len(panels)} panels over {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
