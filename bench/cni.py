"""CNI plugin latency: nsnet's plugin vs the reference bridge + host-local.

    python -m bench.cni [--n 50] [--out bench/results/cni.md]

A runtime execs a plugin four times per container: VERSION, ADD, VERSION,
DEL.  Both methods run in one sandbox (``unshare --mount --net``), each on
its own bridge and subnet, over pre-made namespaces (not timed); the timed
cycle is those four execs, exactly as a runtime would make them (a process
per call, configuration on stdin, ``CNI_*`` in the environment).  The two
methods alternate container by container (and which goes first alternates
too), so a machine loaded by other work weighs on both alike.  nsnet runs as
``nsnet cni install`` installs it (shell launcher, client, resident agent);
the reference plugins are Debian's containernetworking-plugins.

The first cycle of each method is reported apart as the cold one: it
creates the network and bridge (both methods) and, for nsnet, starts the
resident agent (the client waits for its socket).  The warm figures are the
N cycles after it.

Wall time on a machine shared with other work measures the queue for the
CPU as much as the plugin, so the CPU time each cycle costs is reported too:
user + system time of the processes the runtime execs (and their children),
plus, for nsnet, what its resident agent and DNS server spent meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from .common import emit, run_sandboxed, sh, stop_daemons

REF = "/usr/lib/cni"
BIN = "/run/cni-bin"
METHODS = ("nsnet", "bridge+host-local")


def config(method: str) -> dict:
    if method == "nsnet":
        return {"cniVersion": "1.0.0", "name": "bench", "type": "nsnet", "bridge": "cni1",
                "subnet": "198.19.0.0/16", "stateDir": "/run/nsnet-state",
                "etcNetnsDir": "/run/nsnet-etc"}
    return {"cniVersion": "1.0.0", "name": "benchref", "type": "bridge", "bridge": "cni0",
            "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "subnet": "198.18.0.0/16",
                     "dataDir": "/run/cni-ipam", "routes": [{"dst": "0.0.0.0/0"}]}}


def exec_plugin(exe: str, command: str, stdin: str, env: dict[str, str]) -> str:
    res = subprocess.run([exe], input=stdin, capture_output=True, text=True,
                         env=dict(env, CNI_COMMAND=command))
    if res.returncode:
        raise RuntimeError(f"{command}: {res.stdout.strip()} {res.stderr.strip()[-200:]}")
    return res.stdout


def daemon_cpu(state: str) -> float:
    """CPU seconds used so far by the daemons of an nsnet state directory
    (the resident CNI agents and the DNS server), from their pid files."""
    total = 0.0
    try:
        names = [n for n in os.listdir(state) if n.endswith(".pid")]
    except FileNotFoundError:
        return 0.0
    for name in names:
        try:
            with open(os.path.join(state, name)) as f:
                pid = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cycle(exe: str, conf: str, cid: str, netns: str) -> tuple[float, float, float, float]:
    """One container's VERSION, ADD, VERSION, DEL: (cycle, ADD, DEL, CPU) seconds."""
    env = dict(os.environ, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME="eth0",
               CNI_PATH=REF)
    version = json.dumps({"cniVersion": "1.0.0"})
    cpu0 = children_cpu() + daemon_cpu("/run/nsnet-state")
    t0 = time.perf_counter()
    exec_plugin(exe, "VERSION", version, env)
    t1 = time.perf_counter()
    exec_plugin(exe, "ADD", conf, env)
    t2 = time.perf_counter()
    exec_plugin(exe, "VERSION", version, env)
    t3 = time.perf_counter()
    exec_plugin(exe, "DEL", conf, env)
    t4 = time.perf_counter()
    cpu = children_cpu() + daemon_cpu("/run/nsnet-state") - cpu0
    return t4 - t0, t2 - t1, t4 - t3, cpu


def worker(n: int) -> dict:
    sh("mount", "-t", "tmpfs", "nsnet-bench", "/run")
    sh("ip", "link", "set", "lo", "up")
    sh(sys.executable, "-m", "nsnet.cli", "cni", "install", "--dir", BIN)
    exes = {"nsnet": f"{BIN}/nsnet", "bridge+host-local": f"{REF}/bridge"}
    confs = {m: json.dumps(config(m)) for m in METHODS}
    for i in range(2 * (n + 1)):
        sh("ip", "netns", "add", f"c{i}")
    times: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in METHODS}
    k = 0
    for i in range(n + 1):  # container 0 of each method is the cold one
        for method in METHODS if i % 2 == 0 else tuple(reversed(METHODS)):
            times[method].append(cycle(exes[method], confs[method], f"bench{k}",
                                       f"/run/netns/c{k}"))
            k += 1
    out = {}
    for method, rows in times.items():
        warm = rows[1:]
        cycles = sorted(r[0] for r in warm)
        out[method] = {"ok": True, "n": n, "cold_cycle": rows[0][0], "cold_add": rows[0][1],
                       "cycle": statistics.median(cycles),
                       "add": statistics.median(r[1] for r in warm),
                       "del": statistics.median(r[2] for r in warm),
                       "cpu": statistics.mean(r[3] for r in warm),
                       "cycle_p90": cycles[max(0, int(n * 0.9) - 1)]}
    return {"method": "both", "ok": True, "results": out}


def report(res: dict[str, dict], n: int) -> str:
    lines = ["# CNI plugin: VERSION + ADD + VERSION + DEL per container", "",
             f"Warm: median over {n} containers per method; cold: each method's first "
             "container (its ADD creates the network and bridge, and starts nsnet's agent). "
             "Both methods in one sandbox, alternating container by container, each call a "
             "process exec'd with env + stdin as a runtime does. "
             "Generated by `python -m bench.cni`.", "",
             "| plugin | cold cycle | cold ADD | warm cycle (p50) | warm cycle (p90) "
             "| ADD | DEL | CPU per warm cycle (mean) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        if not r.get("ok"):
            lines.append(f"| {name} | failed: {r.get('problem')} | | | | | | |")
            continue
        ms = [f"{r[key] * 1000:.1f} ms" for key in
              ("cold_cycle", "cold_add", "cycle", "cycle_p90", "add", "del", "cpu")]
        lines.append(f"| {name} | " + " | ".join(ms) + " |")
    a, b = res.get("nsnet", {}), res.get("bridge+host-local", {})
    if a.get("ok") and b.get("ok"):
        lines += ["", f"nsnet / reference warm cycle: **{a['cycle'] / b['cycle']:.2f}x** "
                  f"(target <= 2x); cold cycle: {a['cold_cycle'] / b['cold_cycle']:.2f}x; "
                  f"CPU per warm cycle: {a['cpu'] / b['cpu']:.2f}x.",
                  "", f"Load average when the run ended: {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--out")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        try:
            print(json.dumps(worker(args.n)))
        finally:
            stop_daemons("/run/nsnet-state")
        return
    got = run_sandboxed("bench.cni", "both", "--n", str(args.n))
    res = got.get("results") or {m: got for m in METHODS}
    emit(report(res, args.n), args.out, res)


if __name__ == "__main__":
    main()
