#!/usr/bin/env python3
"""Prints issue 21's table from a results database of suites/configs/eviction.json: per method, the
needle-grid score, the SCBench-like scores per mode and turn, the KV bytes held and the slots held
per KV head at the end of a shared context (mean over layers and heads).

    python3 scripts/eviction_table.py out/eviction.db
"""
import json
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1])
rows = db.execute(
    "select c.suite, c.params, m.spec, c.record from cells c join methods m on m.id = c.method_id")
table = {}
order = []
for suite, params, spec, record in rows:
    rec = json.loads(record)
    met = rec.get("metrics", {})
    if spec not in table:
        table[spec] = {}
        order.append(spec)
    t = table[spec]
    if suite == "niah":
        t["niah"] = met.get("score")
        t["niah_mem"] = met.get("max_memory_bytes")
    elif suite == "scbench":
        mode = json.loads(params)["mode"]
        turns = {}
        for s in met.get("samples", []):
            for i, turn in enumerate(s["turns"]):
                turns.setdefault(i, []).append(turn["score"])
        t[mode] = [sum(v) / len(v) for _, v in sorted(turns.items())]
        t[mode + "_n"] = len(met.get("samples", []))
        mem = met.get("memory", {})
        if mode == "multi_turn":
            t["bytes"] = mem.get("payload_bytes", 0) + mem.get("metadata_bytes", 0)
            t["slots"] = mem.get("slots")
            t["tokens"] = mem.get("tokens_seen")

def f(x):
    return "–" if x is None else f"{x:.2f}"

print("| method | NIAH (25) | multi-turn t1 / t2 | multi-request t1 / t2 | KV KiB held (multi-turn end) | slots/head |")
print("|---|---:|---:|---:|---:|---:|")
for spec in order:
    t = table[spec]
    mt = t.get("multi_turn", [])
    mr = t.get("multi_request", [])
    slots = t.get("slots")
    print(f"| `{spec}` | {f(t.get('niah'))} | {' / '.join(f(x) for x in mt)} | "
          f"{' / '.join(f(x) for x in mr)} | {t.get('bytes', 0) / 1024:.0f} | "
          f"{'–' if slots is None else round(slots / 6)} |")
