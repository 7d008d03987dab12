#!/usr/bin/env python3
"""Black-box mutation campaign against kvbench's inputs, through the binary.

For each input kind, makes N mutants of a valid seed (byte flips, truncation, deep nesting,
huge and non-finite numbers, wrong JSON types, duplicate keys, control characters, long values)
and runs the commands that read it. Every command is classified:

  ok2     exit 2 with exactly one line on stderr (the promise for bad input)
  exit0   exit 0 (the mutant was valid, or was taken silently)
  exit1   exit 1 ("internal error": bad input escaped as a bug)
  multi   exit 2 with more than one line on stderr
  signal  killed by a signal (SIGSEGV, SIGABRT, ...)
  hang    still running after --timeout seconds

For databases, a command that is refused (non-zero exit) must leave the file byte-identical;
`dbchanged` counts the refused commands that changed it.

  python3 scripts/mutate_inputs.py --kvbench build/kvbench --mutants 100 [--kinds a,b] [--seed 1]

Prints a Markdown table; `--keep DIR` keeps the mutants that were not `ok2`/`exit0`.
Exit status 1 when any exit1, multi, signal, hang or dbchanged was seen.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = os.path.join(ROOT, "models", "kvb-ref-s")


# ------------------------------------------------------------------------------ mutators
def json_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from json_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:8]):
            yield from json_paths(v, prefix + (i,))


def set_path(doc, path, value):
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


REPLACEMENTS = [
    lambda r: "1e999", lambda r: "-1e999", lambda r: "9223372036854775807",
    lambda r: "99999999999999999999", lambda r: "-1", lambda r: "0", lambda r: "2e9",
    lambda r: "0.5", lambda r: "true", lambda r: "null", lambda r: "{}", lambda r: "[]",
    lambda r: '"x\\ny\\u0001z"', lambda r: json.dumps("v" * 5000), lambda r: '"gelu"',
    lambda r: "[" * 100000 + "]" * 100000, lambda r: "1" + "0" * 400,
    lambda r: str(r.randint(-5, 70000)),
]


IDENTITY = False  # when set, every mutator returns its seed unchanged (the seed check)


def mutate_json_text(text, r):
    if IDENTITY:
        return text
    try:
        doc = json.loads(text)
    except ValueError:
        return mutate_bytes(text.encode(), r).decode("utf-8", "replace")
    choice = r.random()
    paths = list(json_paths(doc))
    if choice < 0.6:
        path = r.choice(paths[1:] or paths)
        marker = "\u0000MUTANT\u0000"
        d = set_path(json.loads(text), path, marker)
        rendered = json.dumps(d)
        return rendered.replace(json.dumps(marker), r.choice(REPLACEMENTS)(r))
    if choice < 0.75:
        # Duplicate a key of some object.
        objs = [p for p in paths if isinstance(get(doc, p), dict) and get(doc, p)]
        if objs:
            p = r.choice(objs)
            obj = get(doc, p)
            k = r.choice(list(obj))
            marker = "\u0000DUP\u0000"
            d = set_path(json.loads(text), p + (k,), marker)
            rendered = json.dumps(d)
            dup = json.dumps(k) + ": " + json.dumps(obj[k]) + ", " + json.dumps(k) + ": "
            return rendered.replace(json.dumps(k) + ": " + json.dumps(marker), dup + r.choice(REPLACEMENTS[:8])(r))
    if choice < 0.85:
        # Remove a member.
        objs = [p for p in paths if isinstance(get(doc, p), dict) and get(doc, p)]
        if objs:
            p = r.choice(objs)
            d = json.loads(text)
            del get(d, p)[r.choice(list(get(doc, p)))]
            return json.dumps(d)
    return mutate_bytes(text.encode(), r).decode("utf-8", "replace")


def get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def mutate_bytes(data, r):
    if IDENTITY:
        return bytes(data)
    data = bytearray(data)
    if not data:
        return bytes(r.randrange(256) for _ in range(8))
    op = r.randrange(5)
    if op == 0:
        for _ in range(r.randint(1, 8)):
            data[r.randrange(len(data))] = r.randrange(256)
    elif op == 1:
        data = data[: r.randrange(len(data))]
    elif op == 2:
        a = r.randrange(len(data))
        del data[a : a + r.randint(1, 64)]
    elif op == 3:
        a = r.randrange(len(data))
        data[a:a] = bytes(r.randrange(256) for _ in range(r.randint(1, 32)))
    else:
        a = r.randrange(len(data))
        data[a:a] = data[a : a + r.randint(1, 256)]
    return bytes(data)


def mutate_safetensors(blob, r):
    if IDENTITY:
        return blob
    n = int.from_bytes(blob[:8], "little")
    header, rest = blob[8 : 8 + n].decode(), blob[8 + n :]
    if r.random() < 0.8:
        h = mutate_json_text(header, r).encode()
        keep_len = r.random() < 0.8
        return (len(h) if keep_len else r.randrange(1 << 40)).to_bytes(8, "little") + h + rest
    return mutate_bytes(blob[: 8 + n + 64], r) + rest[64:]


# ------------------------------------------------------------------------------ running
def run(cmd, timeout, cwd=None):
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", ""
    err = p.stderr.decode("utf-8", "replace")
    if p.returncode < 0:
        return "signal", err
    if p.returncode == 0:
        return "exit0", err
    lines = err.count("\n") + (0 if err.endswith("\n") or not err else 1)
    if p.returncode == 2:
        return ("ok2" if lines == 1 else "multi"), err
    if lines > 1:
        return "multi", err
    return "exit1", err


def sha(path):
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Campaign:
    def __init__(self, args):
        self.args = args
        self.kv = os.path.abspath(args.kvbench)
        self.tmp = tempfile.mkdtemp(prefix="kvb-mutate-")
        self.rows = {}
        self.examples = {}

    def record(self, kind, outcome, err, keep=None):
        row = self.rows.setdefault(kind, {})
        row[outcome] = row.get(outcome, 0) + 1
        if outcome not in ("ok2", "exit0"):
            self.examples.setdefault((kind, outcome), err.strip()[:300])
            if keep and self.args.keep:
                dst = os.path.join(self.args.keep, kind, f"{outcome}-{row[outcome]}")
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if os.path.isdir(keep):
                    shutil.copytree(keep, dst, dirs_exist_ok=True)
                else:
                    shutil.copy(keep, dst)

    def model_copy(self, name):
        d = os.path.join(self.tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for f in ("config.json", "tokenizer.json"):
            shutil.copy(os.path.join(REF, f), d)
        os.symlink(os.path.join(REF, "model.safetensors"), os.path.join(d, "model.safetensors"))
        return d

    def gen(self, d):
        return [self.kv, "generate", "--model", d, "--prompt", "Once upon a time", "--max-new-tokens", "2"]

    def kind_config(self, r):
        seed = open(os.path.join(REF, "config.json")).read()
        d = self.model_copy("cfg")
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(mutate_json_text(seed, r))
        for cmd in ([self.kv, "info", "--model", d], self.gen(d)):
            self.record("config.json", *run(cmd, self.args.timeout), keep=d)

    def kind_tokenizer(self, r):
        seed = open(os.path.join(REF, "tokenizer.json")).read()
        d = self.model_copy("tok")
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            f.write(mutate_json_text(seed, r))
        self.record("tokenizer.json", *run(self.gen(d), self.args.timeout), keep=d)

    def kind_safetensors(self, r):
        d = self.model_copy("st")
        os.unlink(os.path.join(d, "model.safetensors"))
        blob = open(os.path.join(REF, "model.safetensors"), "rb").read()
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(mutate_safetensors(blob, r))
        self.record("safetensors header", *run(self.gen(d), self.args.timeout))

    def kind_spec(self, r):
        seeds = ["full", "kivi(bits=2)", "kivi(bits=4,group=32,residual=128)", "int(bits=8)",
                 "streaming(sink=4,window=252)", "snapkv(budget=256)+kivi(bits=2)",
                 "h2o(budget=128,recent=16)", "knorm(budget=64)", "random(budget=32,seed=3)"]
        s = r.choice(seeds)
        ops = [lambda t: t.replace("=", "=9223372036854775807", 1),
               lambda t: t.replace("=", "=99999999999999999999", 1),
               lambda t: t.replace("=", "=1e999", 1), lambda t: t.replace("=", "=-", 1),
               lambda t: t.replace("(", "(\n", 1), lambda t: t + "+" + t,
               lambda t: t.replace(")", ",bits=2)", 1), lambda t: t[: r.randrange(len(t) + 1)],
               lambda t: t.replace("=", "=nan", 1), lambda t: t + "(" * 5000,
               lambda t: mutate_bytes(t.encode(), r).decode("utf-8", "replace")]
        if not IDENTITY:
            s = r.choice(ops)(s).replace("\0", "\1")  # argv cannot carry a NUL
        self.record("spec strings", *run([self.kv, "methods", "--describe", s], self.args.timeout))

    def kind_suite(self, r):
        seed = open(os.path.join(ROOT, "suites", "configs", "quick.json")).read()
        p = os.path.join(self.tmp, "suite.json")
        with open(p, "w") as f:
            f.write(mutate_json_text(seed, r))
        self.record("suite config", *run([self.kv, "plan", "--suite", p], self.args.timeout, cwd=ROOT), keep=p)

    def kind_scbench(self, r):
        lines = [json.dumps({"id": i, "context": "The pass key is 7%d3. Remember it. " % i * 3,
                             "multi_turns": [{"input": "What is the pass key?", "answer": "7%d3" % i}]})
                 for i in range(3)]
        text = "\n".join(lines)
        if IDENTITY:
            pass
        elif r.random() < 0.5:
            i = r.randrange(3)
            lines[i] = mutate_json_text(lines[i], r).replace("\n", " ")
            text = "\n".join(lines)
        else:
            text = mutate_bytes(text.encode(), r).decode("utf-8", "replace")
        data = os.path.join(self.tmp, "sc.jsonl")
        with open(data, "w") as f:
            f.write(text)
        suite = {"name": "mut", "seed": 1, "models": [REF], "methods": ["full"],
                 "datasets": {"sc": {"type": "scbench_jsonl", "path": data, "metric": "substring"}},
                 "runs": [{"suite": "scbench", "datasets": ["sc"], "params": {"max_new_tokens": 4}}]}
        sp = os.path.join(self.tmp, "sc_suite.json")
        with open(sp, "w") as f:
            json.dump(suite, f)
        db = os.path.join(self.tmp, "sc.db")
        for f in (db, db + "-wal", db + "-shm"):
            if os.path.exists(f):
                os.unlink(f)
        self.record("scbench_jsonl", *run([self.kv, "run", "--suite", sp, "--db", db, "--max-cells", "1"],
                                          self.args.timeout), keep=data)

    def seed_db(self):
        if hasattr(self, "_db"):
            return self._db
        suite = {"name": "seed", "seed": 1, "models": [REF], "methods": ["full", "kivi(bits=2)"],
                 "datasets": {"prose": {"type": "prose", "words": 2000}},
                 "runs": [{"suite": "perplexity", "datasets": ["prose"],
                           "params": {"ctx": 256, "chunk": 64, "max_windows": 1}}]}
        sp = os.path.join(self.tmp, "seed_suite.json")
        with open(sp, "w") as f:
            json.dump(suite, f)
        self._db = os.path.join(self.tmp, "seed.db")
        self._suite = sp
        for name in ("a", "b"):
            subprocess.run([self.kv, "run", "--suite", sp, "--db", self._db, "--run-name", name],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self._db

    def kind_db(self, r):
        seed = open(self.seed_db(), "rb").read()
        db = os.path.join(self.tmp, "mut.db")
        out = os.path.join(self.tmp, "out")
        cmds = [[self.kv, "export", "--db", db, "--format", "jsonl"],
                [self.kv, "export", "--db", db, "--format", "csv"],
                [self.kv, "compare", "--db", db, "--baseline", "a", "--candidate", "b"],
                [self.kv, "leaderboard", "--db", db, "--out", out],
                [self.kv, "report", "--db", db, "--out", out + ".html"],
                [self.kv, "run", "--suite", self._suite, "--db", db, "--run-name", "a"]]
        data = seed if IDENTITY else (mutate_bytes(seed, r) if r.random() < 0.7 else self.mutate_db_record(seed, r))
        for cmd in cmds:
            for f in (db, db + "-wal", db + "-shm", db + "-journal"):
                if os.path.exists(f):
                    os.unlink(f)
            with open(db, "wb") as f:
                f.write(data)
            before = sha(db)
            outcome, err = run(cmd, self.args.timeout)
            self.record("results .db", outcome, err, keep=db)
            if outcome not in ("exit0",) and sha(db) != before:
                self.record("results .db (refused, changed)", "dbchanged", " ".join(cmd[1:2]) + ": " + err)

    def mutate_db_record(self, seed, r):
        import sqlite3
        p = os.path.join(self.tmp, "rec.db")
        with open(p, "wb") as f:
            f.write(seed)
        con = sqlite3.connect(p)
        tables = [t for (t,) in con.execute("select name from sqlite_master where type='table'")]
        t = r.choice(tables)
        cols = [c[1] for c in con.execute(f"pragma table_info({t})")]
        c = r.choice(cols)
        val = r.choice(['{"a":', "[" * 100000, "1e999", "", None, -1, 2**62, "x\ny", '{"k":1,"k":2}'])
        try:
            con.execute(f"update {t} set {c} = ? where rowid = (select min(rowid) from {t})", (val,))
            con.commit()
        except sqlite3.Error:  # a constraint the schema enforces itself: mutate bytes instead
            con.close()
            return mutate_bytes(seed, r)
        con.close()
        return open(p, "rb").read()

    def kind_bench(self, r):
        seed = json.dumps({"context": {"date": "2026-11-29T00:00:00+00:00", "host_name": "h",
                                       "executable": "kvbench_bench", "num_cpus": 2, "mhz_per_cpu": 2000,
                                       "library_build_type": "release"},
                           "benchmarks": [{"name": "BM_Quantize/4096", "run_name": "BM_Quantize/4096",
                                           "run_type": "iteration", "repetitions": 1, "repetition_index": 0,
                                           "threads": 1, "iterations": 100, "real_time": 12.5,
                                           "cpu_time": 12.4, "time_unit": "us", "bytes_per_second": 1.0e9}]})
        p = os.path.join(self.tmp, "bench.json")
        with open(p, "w") as f:
            f.write(mutate_json_text(seed, r))
        db = os.path.join(self.tmp, "bench.db")
        for f in (db, db + "-wal", db + "-shm"):
            if os.path.exists(f):
                os.unlink(f)
        self.record("benchmark JSON", *run([self.kv, "import-bench", "--db", db, "--json", p], self.args.timeout), keep=p)

    def kind_train(self, r):
        seed = open(os.path.join(REF, "train.json")).read()
        p = os.path.join(self.tmp, "train.json")
        with open(p, "w") as f:
            f.write(mutate_json_text(seed, r))
        out = os.path.join(self.tmp, "train_out")
        shutil.rmtree(out, ignore_errors=True)
        self.record("train.json", *run([self.kv, "train", "--config", p, "--out", out, "--max-steps", "0",
                                        "--no-eval"], self.args.timeout, cwd=ROOT), keep=p)


KINDS = {"config": "kind_config", "tokenizer": "kind_tokenizer", "safetensors": "kind_safetensors",
         "suite": "kind_suite", "scbench": "kind_scbench", "db": "kind_db", "bench": "kind_bench",
         "spec": "kind_spec", "train": "kind_train"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvbench", default=os.path.join(ROOT, "build", "kvbench"))
    ap.add_argument("--mutants", type=int, default=100)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--keep", default="")
    args = ap.parse_args()
    c = Campaign(args)
    global IDENTITY
    try:
        # Each kind's unmutated seed must be accepted by every command, or the campaign measures
        # nothing but a broken seed.
        IDENTITY = True
        for kind in args.kinds.split(","):
            getattr(c, KINDS[kind])(random.Random(0))
        bad_seeds = {k: row for k, row in c.rows.items() if set(row) != {"exit0"}}
        if bad_seeds:
            print(f"[mutate] seeds not accepted: {bad_seeds} {c.examples}", file=sys.stderr)
            return 2
        c.rows.clear()
        IDENTITY = False
        for kind in args.kinds.split(","):
            r = random.Random(f"{args.seed}:{kind}")
            for _ in range(args.mutants):
                getattr(c, KINDS[kind])(r)
            print(f"[mutate] {kind}: done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(c.tmp, ignore_errors=True)
    cols = ["ok2", "exit0", "exit1", "multi", "signal", "hang", "dbchanged"]
    print("| input | commands | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    bad = 0
    for kind, row in c.rows.items():
        print(f"| {kind} | {sum(row.values())} | " + " | ".join(str(row.get(k, 0)) for k in cols) + " |")
        bad += sum(row.get(k, 0) for k in cols[2:])
    for (kind, outcome), err in sorted(c.examples.items()):
        print(f"\n{kind} / {outcome}: {err}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
