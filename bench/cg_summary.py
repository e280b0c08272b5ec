#!/usr/bin/env python3
"""Summarise a callgrind profile written by `nestling-bench --cost`, per request / event.

callgrind_annotate lists a function once per source file its inlined code comes from
when the binary has line tables; this script sums those pieces, divides by the number of
requests (or events) of the phase, and adds views callgrind_annotate lacks.

  cg_summary.py top     PROFILE UNITS [N]          self and inclusive Ir per unit, by
                                                   function, and self Ir by source crate
                                                   of the executed line (inlining resolved)
  cg_summary.py calls   PROFILE UNITS REGEX        callers and callees of matching functions
  cg_summary.py sites   PROFILE UNITS CALLEE_REGEX call sites (file:line) of matching callees
  cg_summary.py lines   PROFILE UNITS FN_REGEX [N] self Ir by source line inside a function

UNITS is the number of requests or events in the phase (20000 / 20480 by default).
Inclusive figures of recursive functions are approximate. Python 3, no dependencies.
"""

import collections
import re
import sys

SPEC = re.compile(r"(fl|fi|fe|fn|ob|cfl|cfi|cfn|cob)=(.*)")
ID = re.compile(r"\((\d+)\)(?: (.*))?")


class Profile:
    """Self costs per (function, file, line), and calls per (caller, site, callee)."""

    def __init__(self, path):
        names = {"fl": {}, "fn": {}, "ob": {}}
        kind_of = {"fl": "fl", "fi": "fl", "fe": "fl", "cfl": "fl", "cfi": "fl",
                   "fn": "fn", "cfn": "fn", "ob": "ob", "cob": "ob"}

        def name(kind, value):
            m = ID.match(value)
            if not m:
                return value
            table = names[kind_of[kind]]
            if m.group(2) is not None:
                table[m.group(1)] = m.group(2)
            return table.get(m.group(1), "?")

        self.self_cost = collections.Counter()  # (fn, file, line, object) -> Ir
        self.calls = collections.Counter()  # (caller, file, line, callee) -> inclusive Ir
        self.call_count = collections.Counter()
        self.total = 0
        fn = fl = fi = ob = cfn = None
        pending_call = None
        last = 0
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line[0] == "#":
                    continue
                m = SPEC.match(line)
                if m:
                    kind, value = m.groups()
                    n = name(kind, value)
                    if kind == "fl":
                        fl = fi = n
                    elif kind in ("fi", "fe"):
                        fi = n
                    elif kind == "fn":
                        fn, fi = n, fl
                    elif kind == "ob":
                        ob = n
                    elif kind == "cfn":
                        cfn = n
                    continue
                if line.startswith("calls="):
                    pending_call = int(line[6:].split()[0])
                    continue
                if line[0] not in "0123456789+-*":
                    continue
                parts = line.split()
                if len(parts) < 2:
                    continue
                pos = parts[0]
                if pos[0] in "+-":
                    last += int(pos)
                elif pos != "*":
                    last = int(pos)
                cost = int(parts[1])
                if pending_call is not None:
                    key = (fn, fi, last, cfn)
                    self.calls[key] += cost
                    self.call_count[key] += pending_call
                    pending_call = None
                else:
                    self.self_cost[(fn, fi, last, ob)] += cost
                    self.total += cost

    def by_function(self):
        selfc = collections.Counter()
        for (fn, _, _, _), c in self.self_cost.items():
            selfc[fn] += c
        incl = collections.Counter(selfc)
        for (caller, _, _, callee), c in self.calls.items():
            if caller != callee:
                incl[caller] += c
        return selfc, incl


def crate_of(path, obj):
    """The crate (or library) a source file belongs to."""
    if not path or path == "???":
        return "libc" if obj and "libc" in obj else "no line info: " + (obj or "?").split("/")[-1]
    m = re.search(r"/registry/src/[^/]+/(.+?)-\d+\.\d+\.\d+[^/]*/", path)
    if m:
        return m.group(1)
    m = re.search(r"/rustc/[0-9a-f]+/library/([^/]+)/", path)
    if m:
        return "Rust " + m.group(1)
    m = re.search(r"/rust/deps/(.+?)-\d+\.\d+\.\d+", path)
    if m:
        return "Rust std dep " + m.group(1)
    if path.startswith("./") or path.startswith("/build/glibc"):
        return "libc"
    m = re.search(r"/(runtime|macros|examples|bench|src)/", path)
    if m:
        return {"runtime": "nestling-runtime", "macros": "nestling-macros",
                "examples": "the example", "bench": "nestling-bench",
                "src": "nestling"}[m.group(1)]
    return path


def show(rows, units, total, n):
    for k, v in rows.most_common(n):
        print(f"{v / units:9.0f} {100 * v / total:5.1f}%  {k}")


def main(argv):
    if len(argv) < 4 or argv[1] not in ("top", "calls", "sites", "lines"):
        print(__doc__)
        return 2
    cmd, path, units = argv[1], argv[2], float(argv[3])
    p = Profile(path)
    print(f"{path}: {p.total} Ir = {p.total / units:.0f} Ir per unit ({units:.0f} units)")
    if cmd == "top":
        n = int(argv[4]) if len(argv) > 4 else 25
        selfc, incl = p.by_function()
        print("\n== self Ir per unit, by function")
        show(selfc, units, p.total, n)
        print("\n== inclusive Ir per unit, by function")
        show(incl, units, p.total, n)
        crates = collections.Counter()
        for (_, fi, _, ob), c in p.self_cost.items():
            crates[crate_of(fi, ob)] += c
        print("\n== self Ir per unit, by crate of the executed source line")
        show(crates, units, p.total, n)
    elif cmd == "calls":
        pat = re.compile(argv[4])
        callers = collections.defaultdict(collections.Counter)
        callees = collections.defaultdict(collections.Counter)
        for (caller, _, _, callee), c in p.calls.items():
            callers[callee][caller] += c
            callees[caller][callee] += c
        for f in sorted({f for f in list(callers) + list(callees) if f and pat.search(f)}):
            print(f"\n== {f}\n-- called from:")
            show(callers[f], units, p.total, 10)
            print("-- calls (inclusive Ir of the callee):")
            show(callees[f], units, p.total, 15)
    elif cmd == "sites":
        pat = re.compile(argv[4])
        for (caller, fi, ln, callee), c in sorted(
                p.calls.items(), key=lambda kv: -kv[1])[:10000]:
            if callee and pat.search(callee) and c / units >= 0.5:
                site = "/".join((fi or "?").split("/")[-2:])
                calls = p.call_count[(caller, fi, ln, callee)] / units
                print(f"{c / units:9.0f}  {calls:5.2f} calls/unit  {site}:{ln}  in {caller}  -> {callee}")
    else:
        pat = re.compile(argv[4])
        n = int(argv[5]) if len(argv) > 5 else 25
        lines = collections.Counter()
        for (fn, fi, ln, _), c in p.self_cost.items():
            if fn and pat.search(fn):
                lines["/".join((fi or "?").split("/")[-3:]) + f":{ln}"] += c
        print(f"self Ir of matching functions: {sum(lines.values()) / units:.0f} per unit")
        show(lines, units, p.total, n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
