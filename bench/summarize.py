#!/usr/bin/env python3
"""Medians of golive-load runs (step-<viewers>-run-<k>.json files in one directory).

    summarize.py DIR                       a Markdown table, one row per step
    summarize.py --step N --max-loss 0.1 --max-p99 50 DIR
                                           "pass ..." or "fail ..." for step N (capacity.sh)
"""

import argparse
import json
import pathlib
import re
import statistics


def load(directory):
    steps = {}
    for path in sorted(pathlib.Path(directory).glob("step-*-run-*.json")):
        m = re.match(r"step-(\d+)-run-(\d+)\.json", path.name)
        if not m:
            continue
        steps.setdefault(int(m.group(1)), []).append(json.loads(path.read_text()))
    return steps


def get(run, *keys):
    v = run
    for k in keys:
        if not isinstance(v, dict) or v.get(k) is None:
            return None
        v = v[k]
    return v


def median(runs, *keys):
    values = [get(r, *keys) for r in runs]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


COLUMNS = [
    ("viewers", None),
    ("connected", ("viewers_connected",), 0),
    ("server CPU %", ("server_cpu_pct",), 1),
    ("µs/pkt", ("server_us_per_packet",), 2),
    ("RSS MB", ("server_rss_mb",), 1),
    ("MB/viewer", ("server_mb_per_viewer",), 3),
    ("TTFF p50 ms", ("ttff_ms", "p50"), 1),
    ("TTFF p95 ms", ("ttff_ms", "p95"), 1),
    ("latency p50 ms", ("latency_ms", "p50"), 2),
    ("latency p99 ms", ("latency_ms", "p99"), 2),
    ("loss %", ("loss_pct",), 3),
    ("live loss %", ("live_loss_pct",), 3),
    ("rx Mbit/s", ("rx_mbps",), 0),
    ("load tester CPU %", ("load_cpu_pct",), 1),
    ("load µs/pkt", ("load_us_per_packet",), 2),
    ("runs", None),
]


def table(steps):
    head = [c[0] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted(steps):
        runs = steps[n]
        row = []
        for col in COLUMNS:
            if col[0] == "viewers":
                row.append(str(n))
            elif col[0] == "runs":
                row.append(str(len(runs)))
            else:
                row.append(fmt(median(runs, *col[1]), col[2]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def verdict(steps, n, max_loss, max_p99):
    runs = steps.get(n, [])
    if not runs:
        return f"fail step {n}: no results"
    loss = median(runs, "live_loss_pct")
    p99 = median(runs, "latency_ms", "p99")
    failures = median(runs, "join_failures")
    why = []
    if loss is None or loss > max_loss:
        why.append(f"live loss {fmt(loss, 3)} % > {max_loss} %")
    if p99 is None or p99 > max_p99:
        why.append(f"p99 latency {fmt(p99, 2)} ms > {max_p99} ms")
    if failures:
        why.append(f"{failures} join failures")
    figures = f"loss {fmt(loss, 3)} %, p99 {fmt(p99, 2)} ms, server CPU {fmt(median(runs, 'server_cpu_pct'))} %"
    if why:
        return f"fail step {n}: " + "; ".join(why) + f" ({figures})"
    return f"pass step {n}: {figures}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--step", type=int)
    ap.add_argument("--max-loss", type=float, default=0.1)
    ap.add_argument("--max-p99", type=float, default=50.0)
    args = ap.parse_args()
    steps = load(args.dir)
    if args.step is not None:
        print(verdict(steps, args.step, args.max_loss, args.max_p99))
    else:
        print(table(steps))


if __name__ == "__main__":
    main()
