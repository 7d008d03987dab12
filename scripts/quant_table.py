#!/usr/bin/env python3
"""Prints issue 22's table from a results database of suites/configs/quantization*.json: per model,
every method's perplexity KL against the full cache at the bits per element its memory() measured
(payload + metadata bytes, scales, zero points, outliers, indices and full-precision residuals
included), sorted by bits, then the papers' orderings checked on those numbers.

    python3 scripts/quant_table.py out/quantization.db

Bits per element = 32 x (payload + metadata bytes) / (the fp32 full cache's payload bytes) of the
same model and window, so 32 is the uncompressed fp32 cache and 16 an fp16 one.
"""
import json
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1])
rows = db.execute(
    "select c.suite, c.record from cells c where c.suite = 'perplexity'").fetchall()
by_model = {}
for suite, record in rows:
    rec = json.loads(record)
    model = rec["model"].rstrip("/").split("/")[-1]
    by_model.setdefault(model, []).append(rec)


def mem_bytes(rec):
    m = rec["metrics"]["memory"]
    return m["payload_bytes"] + m["metadata_bytes"]


def fmt(x, se=None, f="%.3g"):
    s = f % x
    if se is not None:
        s += " ± " + (f % se)
    return s


for model, recs in sorted(by_model.items()):
    full = [r for r in recs if r["metrics"].get("reference")]
    if not full:
        print(f"{model}: no full-cache cell", file=sys.stderr)
        continue
    full_bytes = full[0]["metrics"]["memory"]["payload_bytes"]
    kl = {}
    print(f"\n### {model}\n")
    print("| method | bits/element | KL vs full ± se | KL p99 | top-1 agree | ΔNLL ± se |")
    print("|---|---:|---:|---:|---:|---:|")
    table = []
    for r in recs:
        m = r["metrics"]
        bits = 32.0 * mem_bytes(r) / full_bytes
        table.append((bits, r["method"], m))
        kl[r["method"]] = (m["kl_mean"], m["kl_mean_se"], bits)
    for bits, spec, m in sorted(table, key=lambda t: (t[0], t[2]["kl_mean"])):
        print(f"| `{spec}` | {bits:.2f} | {fmt(m['kl_mean'], m['kl_mean_se'])} | "
              f"{fmt(m['kl_p99'])} | {100 * m['top1_agreement']:.1f}% | "
              f"{fmt(m['delta_nll'], m['delta_nll_se'], '%+.3g')} |")

    def find(prefix, *must):
        for spec in kl:
            if spec.startswith(prefix + "(") and all(x in spec for x in must):
                return spec
        return None

    def ahead(a, b):
        if not a or not b:
            return
        (ka, sa, ba), (kb, sb, bb) = kl[a], kl[b]
        diff_se = (sa * sa + sb * sb) ** 0.5
        verdict = "holds" if ka < kb else "does not hold"
        sig = abs(ka - kb) > 2 * diff_se
        print(f"- `{a}` ({ba:.2f} bits) ahead of `{b}` ({bb:.2f} bits): KL {ka:.3g} vs {kb:.3g} — "
              f"{verdict}{'' if sig else ' (within 2 se)'}")

    print("\nOrderings the papers report:\n")
    int2 = find("int", "bits=2")
    kivi2 = find("kivi", "bits=2")
    kvq2 = find("kvquant", "bits=2", "outliers=0.01", "pre_rope=true")
    rot2 = find("rotatekv", "bits=2", "pre_rope=true")
    for a in (kvq2, rot2):
        for b in (int2, kivi2):
            ahead(a, b)
    for bits in (2, 3, 4):
        ahead(find("kvquant", f"bits={bits}", "outliers=0.01", "pre_rope=true"),
              find("kvquant", f"bits={bits}", "outliers=0.01", "pre_rope=false"))
    ahead(kvq2, find("kvquant", "bits=2", "outliers=0,"))
    ahead(rot2, find("rotatekv", "bits=2", "pre_rope=false"))
