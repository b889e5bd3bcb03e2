"""Append the fuzz counts (written by tests/kernel/test_fuzz.py) to the
reliability report: ``python -m bench.reliability_report REPORT FUZZ_FILE``."""

from __future__ import annotations

import ast
import sys


def main() -> int:
    report, fuzz = sys.argv[1], sys.argv[2]
    totals = {"cli": 0, "api": 0, "cli ok": 0, "api ok": 0}
    with open(fuzz) as f:
        for line in f:
            counts = ast.literal_eval(line.split(" ", 1)[1])
            for key in totals:
                totals[key] = max(totals[key], counts.get(key, 0))
    cases = totals["cli"] + totals["api"]
    text = (f"\n## Bad-input fuzzing\n\nhypothesis over the CLI ({totals['cli']} cases) and the "
            f"Python API ({totals['api']} cases): **{cases} cases, 0 tracebacks, 0 "
            "state or kernel changes after a failure** (the run fails otherwise).  "
            f"Of them, {totals['cli ok']} CLI and {totals['api ok']} API cases succeeded: each "
            "was checked for its effect in the kernel (reconcile --dry-run clean), undone, "
            "and the kernel, nft rules, routes, resolv.conf files and state compared equal to "
            "before.\n")
    with open(report, "a") as f:
        f.write(text)
    print(text.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
