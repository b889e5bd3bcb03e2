"""Measure the README's small speed claims instead of asserting them.

    python -m bench.claims [--out bench/results/claims.md] [--pyroute2-venv DIR]

* ``nsnet check`` over a 100-endpoint network (9,900 ordered pairs), timed as
  the whole CLI process, in its own sandbox (``unshare --mount --net``).
* CLI start-up: ``nsnet --help`` and ``nsnet network ls`` (empty state) as
  whole processes, next to a bare ``python3 -c pass`` measured in the same
  run (what any Python CLI pays before its first line).
* Import cost of pyroute2 next to nsnet's own kernel layer: wall time and
  peak RSS of ``python -c "import X"`` in fresh processes.  pyroute2 is not a
  dependency of nsnet: give ``--pyroute2-venv`` a throwaway venv that has it
  (``python3 -m venv DIR && DIR/bin/pip install pyroute2``); its python runs
  both imports, so both pay the same interpreter.

Every figure is the median of several runs (``--reps``, default 7) after a
warm-up run; the report says how each side was driven.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .common import sh, stop_daemons

STATE = "/run/nsnet-state"
ETC = "/run/nsnet-etc"
IMPORT_PROBE = ("import resource, sys, time; t = time.perf_counter(); __import__(sys.argv[1]); "
                "took = time.perf_counter() - t; "
                "print(took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def _nsnet_cmd() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "nsnet")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "nsnet.cli"]


def _timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])}: {res.stderr.strip()[-300:]}")
    return took


def _median(argv: list[str], reps: int, env: dict[str, str] | None = None) -> float:
    _timed(argv, env)  # warm-up: the page cache, not the program, would be measured
    return statistics.median(_timed(argv, env) for _ in range(reps))


# ------------------------------------------------------------ in the sandbox
def check_matrix(n: int) -> dict:
    """Runs inside its own sandbox: n endpoints, then `nsnet check` timed."""
    sh("mount", "-t", "tmpfs", "nsnet-claims", "/run")
    sh("ip", "link", "set", "lo", "up")
    env = dict(os.environ, NSNET_STATE_DIR=STATE, NSNET_ETC_NETNS_DIR=ETC)
    cli = _nsnet_cmd()
    try:
        sh(*cli, "network", "create", "m", "--subnet", "198.18.0.0/24", "--no-dns", env=env)
        sh(*cli, "connect", "m", *[f"e{i}" for i in range(n)], "--create", env=env)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            res = subprocess.run([*cli, "check", "m"], capture_output=True, text=True, env=env)
            times.append(time.perf_counter() - t)
            if res.returncode:
                return {"ok": False, "problem": res.stdout[-300:] + res.stderr[-300:]}
        return {"ok": True, "times": times, "pairs": n * (n - 1)}
    finally:
        stop_daemons(STATE)


# ------------------------------------------------------------------- driver
def cli_startup(reps: int) -> dict[str, float]:
    env = dict(os.environ, NSNET_STATE_DIR="/tmp/nsnet-claims-state",  # (never touched by
               NSNET_ETC_NETNS_DIR="/tmp/nsnet-claims-etc")          # --help; ls reads it)
    return {"python3 -c pass": _median([sys.executable, "-c", "pass"], reps),
            "nsnet --help": _median([*_nsnet_cmd(), "--help"], reps, env),
            "nsnet network ls (empty state)": _median([*_nsnet_cmd(), "network", "ls"], reps,
                                                      env)}


def import_cost(python: str, module: str, reps: int) -> dict[str, float]:
    runs = []
    for _ in range(reps + 1):
        out = subprocess.run([python, "-c", IMPORT_PROBE, module], capture_output=True,
                             text=True, check=True, env=dict(os.environ, PYTHONPATH=_src()))
        took, rss = out.stdout.split()
        runs.append((float(took), int(rss)))
    base = subprocess.run([python, "-c", "import resource; print(resource.getrusage("
                           "resource.RUSAGE_SELF).ru_maxrss)"], capture_output=True, text=True,
                          check=True)
    runs = runs[1:]
    return {"import s": statistics.median(t for t, _ in runs),
            "peak RSS MB": statistics.median(r for _, r in runs) / 1024,
            "RSS over a bare interpreter MB": (statistics.median(r for _, r in runs)
                                               - int(base.stdout)) / 1024}


def _src() -> str:
    import nsnet

    return os.path.dirname(os.path.dirname(os.path.abspath(nsnet.__file__)))


def _pyroute2_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import importlib.metadata as m; "
                          "print(m.version('pyroute2'))"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def report(matrix: dict, start: dict[str, float], imports: dict[str, dict], pyroute2: str,
           note: str) -> str:
    lines = ["# The README's small claims, measured", "",
             "Generated by `python -m bench.claims`." + (f"  {note}" if note else ""), "",
             "## `nsnet check` on a 100-endpoint network", "",
             "One network, 100 endpoints (`connect --create`, DNS off), then the whole "
             "`nsnet check m` process timed, 3 runs, in a private mount + network namespace.", ""]
    if matrix.get("ok"):
        ts = ", ".join(f"{t:.2f} s" for t in matrix["times"])
        lines.append(f"{matrix['pairs']} ordered pairs: median "
                     f"**{statistics.median(matrix['times']):.2f} s** (runs: {ts}).")
    else:
        lines.append(f"failed: {matrix.get('problem')}")
    lines += ["", "## CLI start-up (whole process, median of the runs after a warm-up)", "",
              "| command | wall time |", "|---|---|"]
    lines += [f"| `{k}` | {v * 1000:.0f} ms |" for k, v in start.items()]
    lines += ["", f"## Import cost: pyroute2 {pyroute2} vs nsnet's kernel layer", "",
              "Fresh `python -c \"import X\"` processes (the same interpreter for both, from the "
              "throwaway venv that has pyroute2), median of the runs after a warm-up.", "",
              "| module | import time | peak RSS | RSS over a bare interpreter |",
              "|---|---|---|---|"]
    lines += [f"| `{m}` | {r['import s'] * 1000:.0f} ms | {r['peak RSS MB']:.1f} MB | "
              f"{r['RSS over a bare interpreter MB']:.1f} MB |" for m, r in imports.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.claims", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--pyroute2-venv", help="a throwaway venv with pyroute2 installed")
    p.add_argument("--note", default="")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(check_matrix(args.n)))
        return 0
    from .common import run_sandboxed

    matrix = run_sandboxed("bench.claims", "matrix", "--n", str(args.n))
    start = cli_startup(args.reps)
    python = os.path.join(args.pyroute2_venv, "bin", "python") if args.pyroute2_venv \
        else sys.executable
    imports = {"nsnet.kernel": import_cost(python, "nsnet.kernel", args.reps)}
    version = "(not measured: no --pyroute2-venv)"
    if args.pyroute2_venv:
        version = _pyroute2_version(python)
        imports["pyroute2"] = import_cost(python, "pyroute2", args.reps)
        imports["pyroute2.iproute"] = import_cost(python, "pyroute2.iproute", args.reps)
    text = report(matrix, start, imports, version, args.note)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0 if matrix.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
