"""Dual-stack vs IPv4-only setup/teardown of N endpoints (#16), alternated
in one sandbox (the same kernel state for both), through the API.

    python -m bench.ipv6_ratio N ROUNDS     (as root; results: bench/results/ipv6.md)

Rounds alternate which family goes first, so a load swing on a shared
machine hits both; the medians and their ratio are printed.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))


def main(n: int, rounds: int) -> None:
    from conftest import Sandbox
    from nsnet import ConnectOptions, NetworkSpec

    box = Sandbox(pathlib.Path(tempfile.mkdtemp(prefix="v6ratio")))
    times: dict[str, dict[str, list[float]]] = {f: {"up": [], "down": []} for f in ("v4", "dual")}
    try:
        eng = box.engine()
        eng.network_create(NetworkSpec("r4", "10.200.0.0/20"))
        eng.network_create(NetworkSpec("r6", "10.210.0.0/20", subnet6="fd00:210::/64"))
        for r in range(rounds):
            order = [("v4", "r4"), ("dual", "r6")]
            for family, net in order if r % 2 == 0 else order[::-1]:
                names = [f"{family}{i}" for i in range(n)]
                t = time.perf_counter()
                eng.connect(net, names, ConnectOptions(create=True))
                up = time.perf_counter() - t
                t = time.perf_counter()
                eng.ns_rm(names)
                down = time.perf_counter() - t
                times[family]["up"].append(up)
                times[family]["down"].append(down)
                print(f"round {r} {family}: up {up:.2f}s down {down:.2f}s "
                      f"load1 {os.getloadavg()[0]:.2f}", flush=True)
        med = {f: {k: statistics.median(v) for k, v in d.items()} for f, d in times.items()}
        print(f"N={n} medians: v4 up {med['v4']['up']:.2f}s down {med['v4']['down']:.2f}s; "
              f"dual up {med['dual']['up']:.2f}s down {med['dual']['down']:.2f}s; "
              f"ratio up {med['dual']['up'] / med['v4']['up']:.2f} "
              f"down {med['dual']['down'] / med['v4']['down']:.2f}")
    finally:
        box.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
