"""Where nsnet's time goes: cProfile of a bulk connect + teardown through the
Python API, in a sandbox.  Writes bench/results/profile.md.

    python -m bench.profile --n 1000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _inside(n: int, out: str) -> None:
    from nsnet import ConnectOptions, Engine, NetworkSpec

    from .worker import ETC, GATEWAY, STATE, SUBNET, names, sh

    sh("mount", "-t", "tmpfs", "nsnet-bench", "/run")
    eng = Engine.open(state_dir=STATE, etc_netns_dir=ETC)
    eng.network_create(NetworkSpec("bench", SUBNET, gateway=GATEWAY, bridge="bench0"))
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(eng.connect, "bench", names(n), ConnectOptions(create=True))
    t_up = time.perf_counter() - t0
    t0 = time.perf_counter()
    prof.runcall(eng.ns_rm, names(n))
    t_down = time.perf_counter() - t0
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).sort_stats("tottime")
    stats.print_stats(18)
    body = buf.getvalue()
    start = body.find("   ncalls")
    with open(out, "w") as f:
        f.write(f"# Profile: connect --create + ns rm of {n} endpoints (Python API)\n\n"
                f"Wall time under cProfile: connect {t_up:.2f} s, teardown {t_down:.2f} s "
                "(profiling roughly doubles Python-side cost).\n\n"
                "Top functions by own time:\n\n```\n" + body[start:].rstrip() + "\n```\n")


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", default=os.path.join(HERE, "results", "profile.md"))
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inside:
        try:
            _inside(args.n, args.out)
        finally:
            from .common import stop_daemons
            from .worker import STATE

            stop_daemons(STATE)
        return 0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    return subprocess.call(["unshare", "--mount", "--net", "--propagation", "private", "--",
                            sys.executable, "-m", "bench.profile", "--inside", "--n",
                            str(args.n), "--out", os.path.abspath(args.out)],
                           cwd=os.path.dirname(HERE))


if __name__ == "__main__":
    sys.exit(main())
