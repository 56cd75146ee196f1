#!/usr/bin/env python3
"""check.py — compares the changes a database committed with what a sink got.

    check.py EXPECTED.csv SINKFILE... [--exactly-once] [--deadletter FILE]...
             [--tables t_a,t_b] [--json]

EXPECTED.csv holds one committed change per line, `table,key,op,v`, in
commit order (scripts/torture writes it from the trigger-kept log table
torture.log): op is I (insert), U (update), D (delete) or T (truncate);
v is the row's version column (empty for T).  A change's identity is
(table, key, op, v) for inserts and updates, (table, key, D) for a delete
(keys are never reused: one delete per key) and (table, T, xid) for a
truncate, v holding the truncating transaction's 32-bit xid (the event's
pgxid).

SINKFILEs hold CloudEvents JSON, one event per line (stdout, exec handler
output, kcat output).  Every line must parse; an empty line or `null` (a
tombstone) is skipped.  A dead-letter file (--deadletter) counts its records
as delivered there: the event itself (exec, Kafka) or, for a change that
could not be mapped, the raw row (its key columns given with
--key TABLE=col,col).

Figures: expected, delivered (distinct expected identities seen), lost
(expected, seen nowhere), duplicated (deliveries beyond the first), unexpected
(seen, never committed: a rolled-back change, or a wrong version), reordered
(a key whose changes first arrived out of commit order), bad_lines (lines
that are not one JSON event).  The verdict fails on lost, unexpected,
reordered or bad lines, and on duplicated with --exactly-once.

Python 3 standard library only.
"""
import argparse
import csv
import json
import sys
from collections import defaultdict

OPS = {"ADDED": "I", "MODIFIED": "U", "DELETED": "D", "TRUNCATED": "T"}


def load_expected(path):
    """[(identity, seq)] in commit order; identities are unique."""
    out = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            tbl, key, op, v = (row + [""] * 4)[:4]
            if op == "T":
                ident = (tbl, "", "T", v)
            elif op == "D":
                ident = (tbl, key, "D", "")
            else:
                ident = (tbl, key, op, v)
            out.append((ident, v))
    return out


def table_of(ev):
    src = ev.get("source") or ""
    return src.rsplit("/", 1)[-1] if "/" in src else (ev.get("data") or {}).get("kind", "")


class Tally:
    def __init__(self, key_columns=None):
        self.count = defaultdict(int)  # identity -> deliveries (sink and dead letters)
        self.first = {}  # identity -> order of first arrival
        self.dead = defaultdict(int)  # identity -> dead-letter records
        self.del_v = {}  # delete identity -> the v the event carried (REPLICA IDENTITY FULL)
        self.bad = []  # (file, line number, excerpt)
        self.other = 0  # events of tables not checked (SYNC, other tables)
        self.events = 0
        self.n = 0
        self.key_columns = key_columns or {}

    def _seen(self, ident, dead=False):
        self.count[ident] += 1
        if dead:
            self.dead[ident] += 1
        elif ident not in self.first:
            self.first[ident] = self.n
            self.n += 1

    def event(self, ev, tables, dead=False):
        data = ev.get("data") if isinstance(ev, dict) else None
        if not isinstance(data, dict) or "type" not in data:
            return False
        tbl = table_of(ev)
        op = OPS.get(data.get("type"))
        if op is None or (tables and tbl not in tables):
            self.other += 1
            return True
        self.events += 1
        if op == "T":
            self._seen((tbl, "", "T", str(ev.get("pgxid", ""))), dead)
            return True
        key = data.get("key")
        obj = data.get("object") or {}
        if op == "D":
            ident = (tbl, str(key), "D", "")
            if "v" in obj:
                self.del_v.setdefault(ident, str(obj["v"]))
        else:
            v = obj.get("v")
            ident = (tbl, str(key), op, "" if v is None else str(v))
        self._seen(ident, dead)
        return True

    def raw_row(self, payload, tables):
        """A dead-lettered change that could not be mapped: {schema, table, op, new/old}."""
        tbl, op = payload.get("table", ""), payload.get("op", "")
        if tables and tbl not in tables:
            self.other += 1
            return
        row = payload.get("new") or payload.get("old") or {}
        cols = self.key_columns.get(tbl, ["id"])
        key = "/".join("" if row.get(c) is None else str(row.get(c)) for c in cols)
        o = {"INSERT": "I", "UPDATE": "U", "DELETE": "D"}.get(op, "?")
        self.events += 1
        self._seen((tbl, key, o, "" if o == "D" else str(row.get("v", ""))), dead=True)


def read_sink(tally, path, tables):
    with open(path, "rb") as f:
        for no, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line == b"null":
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                tally.bad.append((path, no, line[:120].decode("utf-8", "replace")))
                continue
            if not tally.event(ev, tables):
                tally.bad.append((path, no, line[:120].decode("utf-8", "replace")))


def read_deadletter(tally, path, tables):
    with open(path, "rb") as f:
        for no, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                payload = rec["payload"]
            except (ValueError, KeyError, TypeError):
                tally.bad.append((path, no, line[:120].decode("utf-8", "replace")))
                continue
            if isinstance(payload, dict) and "specversion" in payload:
                tally.event(payload, tables, dead=True)
            elif isinstance(payload, dict):
                tally.raw_row(payload, tables)
            else:
                tally.bad.append((path, no, line[:120].decode("utf-8", "replace")))


def check(expected_path, sinks, deadletters=(), exactly_once=False, tables=None, key_columns=None):
    """The figures as a dict (see the module's doc)."""
    expected = load_expected(expected_path)
    tables = set(tables) if tables else {i[0] for i, _ in expected}
    tally = Tally(key_columns)
    for p in sinks:
        read_sink(tally, p, tables)
    for p in deadletters:
        read_deadletter(tally, p, tables)

    exp_ids = {}
    for order, (ident, v) in enumerate(expected):
        exp_ids[ident] = (order, v)
    lost = [i for i in exp_ids if tally.count.get(i, 0) == 0]
    duplicated = sum(max(0, tally.count.get(i, 0) - 1) for i in exp_ids)
    unexpected = [i for i in tally.count if i not in exp_ids]
    wrong_delete = [i for i, v in tally.del_v.items() if i in exp_ids and exp_ids[i][1] != v]
    # Per key: the first arrivals must follow commit order.
    by_key = defaultdict(list)
    for ident, (order, _) in exp_ids.items():
        if ident in tally.first and ident[2] != "T":
            by_key[(ident[0], ident[1])].append((order, tally.first[ident]))
    reordered = []
    for k, pairs in by_key.items():
        pairs.sort()
        arrivals = [a for _, a in pairs]
        if any(b < a for a, b in zip(arrivals, arrivals[1:])):
            reordered.append(k)
    dead = sum(1 for i in exp_ids if tally.dead.get(i, 0) > 0)

    res = {
        "expected": len(exp_ids),
        "delivered": len(exp_ids) - len(lost),
        "events": tally.events,
        "lost": len(lost),
        "duplicated": duplicated,
        "unexpected": len(unexpected) + len(wrong_delete),
        "reordered": len(reordered),
        "bad_lines": len(tally.bad),
        "dead_lettered": dead,
        "other_events": tally.other,
        "exactly_once": exactly_once,
        "samples": {
            "lost": [list(i) for i in lost[:5]],
            "unexpected": [list(i) for i in (unexpected + wrong_delete)[:5]],
            "reordered": [list(k) for k in reordered[:5]],
            "bad_lines": [list(b) for b in tally.bad[:3]],
        },
    }
    problems = []
    if res["lost"]:
        problems.append("%d lost" % res["lost"])
    if res["unexpected"]:
        problems.append("%d unexpected" % res["unexpected"])
    if res["reordered"]:
        problems.append("%d keys out of order" % res["reordered"])
    if res["bad_lines"]:
        problems.append("%d lines not a JSON event" % res["bad_lines"])
    if exactly_once and duplicated:
        problems.append("%d duplicated under exactly-once" % duplicated)
    res["ok"] = not problems
    res["problems"] = problems
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("expected")
    ap.add_argument("sinks", nargs="*")
    ap.add_argument("--exactly-once", action="store_true")
    ap.add_argument("--deadletter", action="append", default=[])
    ap.add_argument("--tables", help="comma list: only these tables' events count")
    ap.add_argument("--key", action="append", default=[], help="TABLE=col,col: key columns of raw dead-lettered rows")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args(argv)
    keys = {}
    for k in a.key:
        t, _, cols = k.partition("=")
        keys[t] = cols.split(",")
    res = check(a.expected, a.sinks, a.deadletter, a.exactly_once,
                a.tables.split(",") if a.tables else None, keys)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print("expected %(expected)d, delivered %(delivered)d, lost %(lost)d, duplicated %(duplicated)d, "
              "unexpected %(unexpected)d, reordered %(reordered)d, bad lines %(bad_lines)d, "
              "dead-lettered %(dead_lettered)d" % res)
        for name, s in res["samples"].items():
            if s:
                print("  %s e.g. %s" % (name, s))
        print("OK" if res["ok"] else "FAIL: " + ", ".join(res["problems"]))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
