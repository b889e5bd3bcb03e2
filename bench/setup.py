"""Setup/teardown benchmark: nsnet side by side with the article's commands,
the CNI reference plugins, the best ip -batch, and the kernel-pieces floor.

    python -m bench.setup --n 10 100 500 1000 --reps 3
    python -m bench.setup --quick          # N=10, 1 rep: smoke check of the harness

Each run happens in its own sandbox (private mount + network namespace); the
table of medians goes to stdout and bench/results/setup.md, the plot to
bench/results/setup.png.  Exit status 1 if nsnet's result was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from .common import run_sandboxed
from .worker import METHODS

HERE = os.path.dirname(os.path.abspath(__file__))
NSNET = ("nsnet-cli", "nsnet-api", "nsnet-dual")
BASELINES = ("article", "cni", "ip-batch", "floor", "floor-configured")


def run_once(method: str, n: int) -> dict:
    return run_sandboxed("bench.worker", method, str(n), worker_flag=False, failed={"n": n},
                         timeout=1800)


def measure(ns: list[int], reps: int, methods: list[str]) -> dict[tuple[str, int], dict]:
    out: dict[tuple[str, int], dict] = {}
    for n in ns:
        for method in methods:
            runs = [run_once(method, n) for _ in range(reps)]
            good = [r for r in runs if r.get("ok")]
            out[(method, n)] = {
                "ok": len(good) == len(runs),
                "problem": next((r["problem"] for r in runs if not r.get("ok")), ""),
                "setup": statistics.median(r["setup"] for r in good) if good else None,
                "teardown": statistics.median(r["teardown"] for r in good) if good else None,
            }
            m = out[(method, n)]
            status = "ok" if m["ok"] else f"FAILED: {m['problem']}"
            print(f"  N={n:<5} {method:<10} setup={_fmt(m['setup'])} "
                  f"teardown={_fmt(m['teardown'])} {status}", file=sys.stderr, flush=True)
    return out


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}s"


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def _per(seconds: float | None, n: int) -> str:
    return "-" if seconds is None else f"{1000 * seconds / n:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{b / a:.1f}x"


def table(res: dict[tuple[str, int], dict], ns: list[int], methods: list[str]) -> str:
    lines = ["| N | method | setup (s) | ms/endpoint | teardown (s) | ms/endpoint | ok |",
             "|---|---|---|---|---|---|---|"]
    for n in ns:
        for m in methods:
            r = res[(m, n)]
            verdict = "yes" if r["ok"] else "NO: " + r["problem"]
            lines.append(f"| {n} | {m} | {_secs(r['setup'])} | {_per(r['setup'], n)} | "
                         f"{_secs(r['teardown'])} | {_per(r['teardown'], n)} | {verdict} |")
    lines += ["", "nsnet-cli's speed-up (baseline time / nsnet time; floor: nsnet / floor):", "",
              "| N | vs article setup | vs cni setup | vs ip-batch setup | "
              "nsnet / floor setup | vs article teardown | vs cni teardown |",
              "|---|---|---|---|---|---|---|"]
    for n in ns:
        me = res.get(("nsnet-cli", n), {})
        def base(m, key, n=n):
            return res.get((m, n), {}).get(key)
        floor = base("floor", "setup")
        over_floor = f"{me.get('setup') / floor:.2f}x" if me.get("setup") and floor else "-"
        lines.append(f"| {n} | {_ratio(me.get('setup'), base('article', 'setup'))} | "
                     f"{_ratio(me.get('setup'), base('cni', 'setup'))} | "
                     f"{_ratio(me.get('setup'), base('ip-batch', 'setup'))} | {over_floor} | "
                     f"{_ratio(me.get('teardown'), base('article', 'teardown'))} | "
                     f"{_ratio(me.get('teardown'), base('cni', 'teardown'))} |")
    return "\n".join(lines)


def plot(res: dict[tuple[str, int], dict], ns: list[int], methods: list[str], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key in zip(axes, ("setup", "teardown"), strict=True):
        for m in methods:
            pts = [(n, res[(m, n)][key]) for n in ns if res[(m, n)][key]]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", label=m, linewidth=2.5 if m in NSNET else 1.2)
        ax.set(xscale="log", yscale="log", xlabel="endpoints (N)", ylabel="seconds",
               title=f"{key} of N endpoints (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def rss_probe(n: int) -> None:
    """Inside a sandbox: peak RSS (MB) of one `nsnet connect --create` of N."""
    import resource

    from . import worker

    worker.sh("mount", "-t", "tmpfs", "nsnet-bench", "/run")
    try:
        worker.nsnet_prepare()
        worker.nsnet_cli_setup(n)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    finally:  # the endpoints stay (the sandbox goes); nsnet's DNS server must not
        worker.stop_daemons(worker.STATE)


def measure_rss(n: int) -> float | None:
    cmd = ["unshare", "--mount", "--net", "--propagation", "private", "--",
           sys.executable, "-m", "bench.setup", "--rss-probe", str(n)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    try:
        return float(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def targets(res: dict[tuple[str, int], dict], ns: list[int], rss: float | None) -> str:
    """The speed issue's targets, judged on this run's numbers."""
    def t(m: str, n: int, key: str = "setup") -> float | None:
        return res.get((m, n), {}).get(key)

    big, rows = max(ns), []

    def row(name: str, value: float | None, fmt: str, ok: bool | None) -> None:
        shown = "-" if value is None else fmt.format(value)
        verdict = "n/a" if ok is None or value is None else ("PASS" if ok else "MISS")
        rows.append(f"| {name} | {shown} | {verdict} |")

    cli_up, cli_down = t("nsnet-cli", big), t("nsnet-cli", big, "teardown")
    row(f"setup of {big}, whole CLI process (<= 2.5 s)", cli_up, "{:.2f} s",
        cli_up is not None and cli_up <= 2.5)
    row(f"teardown of {big} (<= 1.5 s)", cli_down, "{:.2f} s",
        cli_down is not None and cli_down <= 1.5)
    for base, key, goal in (("article", "setup", 20), ("cni", "setup", 10),
                            ("article", "teardown", 20), ("cni", "teardown", 20)):
        b, me = t(base, big, key), t("nsnet-cli", big, key)
        ratio = b / me if b and me else None
        row(f"{key} vs {base} at N={big} (>= {goal}x)", ratio, "{:.1f}x",
            ratio is not None and ratio >= goal)
    floor = t("floor", big)
    over = cli_up / floor if cli_up and floor else None
    row(f"setup / kernel-pieces floor at N={big} (<= 1.3x)", over, "{:.2f}x",
        over is not None and over <= 1.3)
    if 10 in ns:
        small = t("nsnet-cli", 10)
        row("N=10 whole command (<= 0.25 s)", small, "{:.3f} s", small is not None
            and small <= 0.25)
    row(f"peak RSS at N={big} (<= 60 MB)", rss, "{:.1f} MB", rss is not None and rss <= 60)
    if 100 in ns and big >= 1000:
        a, b = t("nsnet-cli", 100), t("nsnet-cli", big)
        growth = (b / big) / (a / 100) if a and b else None
        row(f"per-endpoint cost growth N=100 -> {big} (<= 1.5x)", growth, "{:.2f}x",
            growth is not None and growth <= 1.5)
    return "\n".join(["| target | measured | verdict |", "|---|---|---|", *rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.setup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10, 100, 500, 1000])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--quick", action="store_true", help="N=10, 1 rep (harness smoke check)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--rss-probe", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_probe:
        rss_probe(args.rss_probe)
        return 0
    if args.quick:
        args.n, args.reps = [10], 1
    res = measure(args.n, args.reps, args.methods)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "setup.json"), "w") as f:
        json.dump([{"method": m, "n": n, **r} for (m, n), r in res.items()], f, indent=1)
    text = table(res, args.n, args.methods)
    if "nsnet-cli" in args.methods:
        text += "\n\nTargets (issue: 1000 endpoints up in <= 2.5 s and down in <= 1.5 s):\n\n"
        text += targets(res, args.n, measure_rss(max(args.n)))
    print(text)
    header = (f"# Setup / teardown benchmark\n\n`python -m bench.setup --n "
              f"{' '.join(map(str, args.n))} --reps {args.reps}` on {os.cpu_count()} cores; "
              "medians; each run in its own sandbox namespace.\n\n")
    with open(os.path.join(args.out, "setup.md"), "w") as f:
        f.write(header + text + "\n")
    if plot(res, args.n, args.methods, os.path.join(args.out, "setup.png")):
        print(f"plot: {os.path.join(args.out, 'setup.png')}")
    wrong = [f"{m} N={n}: {r['problem']}" for (m, n), r in res.items()
             if m in NSNET and not r["ok"]]
    for w in wrong:
        print(f"nsnet result WRONG: {w}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
