"""Markdown report of a benchmark run: ``python benchmarks/report.py results.json``.

Reads the pytest-benchmark JSON written by ``--benchmark-json`` and prints: the machine, one
table of usher's figures (median ns per operation, operations per second) with the speed-up
against each baseline *measured in the same run* (baseline median ns / usher median ns; > 1
means usher is faster), and the targets of benchmarks/README.md with the measured values.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

BASELINES = ("scan", "heapq", "numpy")
ORDER = ("launch", "launch-warm", "launch-index", "launch_many", "launch_many-ids", "reconnect", "share", "logoff", "explain-off", "explain-on",
         "threads-1", "threads-2", "telemetry", "import", "day")
LABEL = {
    "launch": "launch (one call)",
    "launch-warm": "launch, same users each round",
    "launch-index": "launch_by_index (one call)",
    "launch_many": "launch_many (batch)",
    "launch_many-ids": "launch_many, user ids",
    "reconnect": "launch → reconnect",
    "share": "launch → share",
    "logoff": "logoff",
    "explain-off": "launch, explain off",
    "explain-on": "launch, explain on",
    "threads-1": "launch, 1 thread",
    "threads-2": "launch, 2 threads",
    "telemetry": "telemetry_many (per server)",
    "import": "import usher (warm, s)",
    "day": "simulated hospital day (s)",
}


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        x = b["extra_info"]
        if "kind" not in x:
            continue
        med = b["stats"]["median"]
        rows[(x["kind"], x["size"], x["mix"], x["impl"])] = dict(
            ns=med / x["decisions"] * 1e9, median_s=med, decisions=x["decisions"],
            rounds=b["stats"]["rounds"], iqr_s=b["stats"]["iqr"], extra=x,
        )
    return data, rows


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:,.1f} µs"
    return f"{ns:,.0f} ns"


def fmt_rate(per_s):
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.0f} k/s"
    return f"{per_s:.0f} /s"


def fmt_ratio(r):
    if r is None:
        return "–"
    return f"{r:,.0f}×" if r >= 10 else f"{r:.2f}×"


def machine(data):
    m = data.get("machine_info", {})
    u = m.get("usher", {})
    load = u.get("loadavg_at_start")
    load = ", ".join(f"{v:.2f}" for v in load) if load else "?"
    commit = data.get("commit_info", {})
    memory = u.get("memory_latency_ns_at_start")
    memory = ("; ns per dependent memory read at start: "
              + ", ".join(f"{v:.0f} over {mb} MB" for mb, v in memory.items())) if memory else ""
    return (f"Machine: {u.get('cpu_model', m.get('cpu', {}).get('brand_raw', '?'))}, "
            f"{u.get('cores', '?')} cores; Python {u.get('python', m.get('python_version'))}, "
            f"numba {u.get('numba', '?')}, numpy {u.get('numpy', '?')}, usher {u.get('usher', '?')}; "
            f"load average at start {load}{memory}; commit {commit.get('id', '?')[:10]}"
            f"{' (dirty tree)' if commit.get('dirty') else ''}; {data.get('datetime', '')[:19]}")


def table(rows):
    out = ["| operation | servers | mix | usher median / op | usher ops/s | vs scan | vs heapq | vs numpy | note |",
           "|---|---:|:-:|---:|---:|---:|---:|---:|---|"]
    keys = sorted({(k, n, m) for (k, n, m, impl) in rows if impl == "usher"},
                  key=lambda t: (ORDER.index(t[0]) if t[0] in ORDER else 99, t[1], t[2]))
    for kind, n, mix in keys:
        u = rows[(kind, n, mix, "usher")]
        if kind == "import":
            s = u["extra"].get("import_s", u["median_s"])
            out.append(f"| {LABEL[kind]} | – | – | {s:.3f} s | – | – | – | – | "
                       f"whole subprocess {u['median_s']:.3f} s |")
            continue
        if kind == "day":
            x = u["extra"]
            loop = f"loop {x['loop_s']:.2f} s, " if "loop_s" in x else ""
            ops = f" for {x['operations']:,} operations" if "operations" in x else ""
            out.append(f"| {LABEL[kind]} | {n:,} | {mix} | {u['median_s']:.2f} s | – | – | – | – | "
                       f"{loop}engine {x['engine_s']:.2f} s{ops} |")
            continue
        ratios = []
        base_kind = "launch" if kind in ("launch-warm", "launch-index", "launch_many", "launch_many-ids", "explain-off", "threads-1", "threads-2") else kind
        for b in BASELINES:
            r = rows.get((base_kind, n, mix, b))
            if kind == "explain-on":
                r = None
            ratios.append(None if r is None else r["ns"] / u["ns"])
        note = ""
        if kind == "launch_many":
            note = f"batch of {u['decisions']:,}, user indices; baselines: their launch loop"
        elif kind == "launch_many-ids":
            note = f"batch of {u['decisions']:,}, user ids (str) looked up by the engine"
        elif kind == "explain-on":
            off = rows.get(("explain-off", n, mix, "usher"))
            note = f"{u['ns'] / off['ns']:.1f}× explain off" if off else ""
        elif kind == "threads-2":
            one = rows.get(("threads-1", n, mix, "usher"))
            note = f"{one['ns'] / u['ns']:.2f}× the throughput of 1 thread" if one else ""
        elif kind == "telemetry":
            note = f"{u['median_s'] * 1e6:,.1f} µs per call of {u['decisions']:,} servers"
        elif kind == "launch-warm":
            cold = rows.get(("launch", n, mix, "usher"))
            note = (f"users and session slots in cache: {cold['ns'] / u['ns']:.2f}× faster than one call"
                    if cold else "")
        elif kind == "launch-index":
            by_id = rows.get(("launch", n, mix, "usher"))
            note = (f"user named by index, no id lookup: {by_id['ns'] / u['ns']:.2f}× faster than by id"
                    if by_id else "")
        elif kind in ("launch", "explain-off"):
            note = f"{u['extra'].get('placed', 0):,} placed in {u['rounds']} rounds of {u['decisions']}"
        out.append(f"| {LABEL.get(kind, kind)} | {n:,} | {mix} | {fmt_ns(u['ns'])} | "
                   f"{fmt_rate(1e9 / u['ns'])} | " + " | ".join(fmt_ratio(r) for r in ratios) + f" | {note} |")
    return "\n".join(out)


def baselines_table(rows):
    out = ["| baseline | operation | servers | mix | median / op | ops/s |", "|---|---|---:|:-:|---:|---:|"]
    for (kind, n, mix, impl), r in sorted(rows.items(), key=lambda t: (t[0][3], ORDER.index(t[0][0]) if t[0][0] in ORDER else 99, t[0][1], t[0][2])):
        if impl == "usher" or kind not in ("launch", "telemetry"):
            continue
        out.append(f"| {impl} | {LABEL[kind]} | {n:,} | {mix} | {fmt_ns(r['ns'])} | {fmt_rate(1e9 / r['ns'])} |")
    return "\n".join(out)


def targets(rows):
    def ns(kind, n, mix, impl="usher"):
        r = rows.get((kind, n, mix, impl))
        return None if r is None else r["ns"]

    lines = ["| target | measured | met |", "|---|---|:-:|"]

    def add(text, value, ok):
        lines.append(f"| {text} | {value} | {'yes' if ok else 'no' if ok is not None else '–'} |")

    for mix in ("a", "b"):
        v = ns("launch", 1400, mix)
        if v is not None:
            add(f"single launch ≤ 0.5 µs median at 1,400 servers, mix {mix}", fmt_ns(v), v <= 500)
            for b, want in (("scan", 100), ("heapq", 7)):
                w = ns("launch", 1400, mix, b)
                if w is not None:
                    add(f"≥ {want}× the {b} broker, mix {mix}, 1,400 servers", fmt_ratio(w / v), w / v >= want)
        sizes = sorted({k[1] for k in rows if k[0] == "launch" and k[2] == mix and k[3] == "usher"})
        if v is not None and len(sizes) > 1:
            big = sizes[-1]
            r = ns("launch", big, mix) / v
            add(f"per-launch cost at {big:,} ≤ 2× that at 1,400, mix {mix}", f"{r:.2f}×", r <= 2)
            w, w_big = ns("launch-warm", 1400, mix), ns("launch-warm", big, mix)
            if w is not None and w_big is not None:
                add(f"the same with the users in cache (not a target), mix {mix}",
                    f"{w_big / w:.2f}×", None)
        w = ns("launch_many", 1400, mix)
        if w is not None:
            want = 20e6 if mix == "a" else 5e6
            add(f"batch ≥ {want / 1e6:.0f} M decisions/s, 1,400 servers, mix {mix}", fmt_rate(1e9 / w), 1e9 / w >= want)
    for mix in ("a", "b"):
        r = rows.get(("telemetry", 1400, mix, "usher"))
        if r is not None:
            add(f"telemetry for 1,400 servers ≤ 20 µs, mix {mix}", f"{r['median_s'] * 1e6:,.1f} µs", r["median_s"] <= 20e-6)
    r = rows.get(("import", 0, "-", "usher"))
    if r is not None:
        s = r["extra"].get("import_s", r["median_s"])
        add("warm `import usher` ≤ 1 s", f"{s:.2f} s", s <= 1.0)
    r = rows.get(("day", 1400, "horizontal", "usher"))
    if r is not None:
        add("the simulated hospital day ≤ 2 s", f"{r['median_s']:.2f} s", r["median_s"] <= 2.0)
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    data, rows = load(argv[1])
    print(machine(data))
    print()
    print("usher, and its speed-up against each baseline measured in the same run "
          "(baseline median / usher median):")
    print()
    print(table(rows))
    print()
    print("Baselines:")
    print()
    print(baselines_table(rows))
    print()
    print("Targets:")
    print()
    print(targets(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
