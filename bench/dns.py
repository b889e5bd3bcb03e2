"""Embedded DNS: nsnet's server (hardened and as it was before the hardening)
vs aardvark-dns, same names, same clients, side by side in one run.

    python -m bench.dns [--names 10000] [--seconds 5] [--rounds 3] [--out bench/results/dns.md]

Each server runs in its own sandbox (``unshare --mount --net``) serving
10,000 names (10 endpoints x 1,000 aliases) on the gateway 198.18.0.1; a
client namespace at 198.18.0.2 asks for every one of those names (A records)
in a fixed shuffled order, cycling.  Two clients per server, one after the
other, both from the client namespace:

* dnsperf (DNS-OARC's, the field's standard): ``dnsperf -s 198.18.0.1
  -d NAMES -l SECONDS -c 1 -T 1 -q 32 -t 2`` (one client, one thread, 32
  queries in flight, every name once per pass);
* the in-house Python client: latency one query at a time (p50/p99 over the
  first 3,000 names, so cold: each name asked for the first time), then
  throughput with a window of 32 in flight for SECONDS;
* RSS of the server process after the load.

The servers:

* ``nsnet``: this tree's server, started by the engine as nsnet runs it;
* ``nsnet@main``: the server of commit BASELINE (before the security
  hardening of issue #12), on the same state, started the same way
  (``python -I``), to show what the hardening costs;
* ``aardvark-dns`` (Debian's, podman's DNS server) configured exactly as
  netavark configures it: a file per network in the config directory, first
  line the gateway, then one line per container -- ``ID IPV4 IPV6 NAMES``
  with names comma-separated -- for EVERY container on the network,
  including the querying client (aardvark-dns 1.4 answers a client it does
  not know with a linear scan over all names: leaving the client out, as an
  earlier version of this benchmark did, measured a misconfiguration).

Rounds alternate the order of the servers (the machine is shared: absolute
numbers move, the comparison within a round does not); the report gives
every round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time

from .common import bridge_and_peer, emit, run_sandboxed, sh, stop_daemons

AARDVARK = "/usr/lib/podman/aardvark-dns"
SUBNET, GATEWAY, CLIENT = "198.18.0.0/20", "198.18.0.1", "198.18.0.2"
STATE, ETC, CONF = "/run/nsnet-state", "/run/nsnet-etc", "/run/aardvark"
NAMES_FILE = "/run/dns-names.txt"
HOSTS = 10
WINDOW = 32
# the last commit before the DNS hardening of issue #12 (git main when it began)
BASELINE = "6a4094d430a047f7dfec2b515a48d0b48a9385f6"
METHODS = ("nsnet", "nsnet@main", "aardvark-dns")
DNSLIB_PATH = "nsnet, dnslib path only"  # this tree's answer() without its fast path

LOAD = r"""
import json, socket, struct, sys, time, select
server, seconds, window, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names = [line.split()[0] for line in open(path)]
def query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)
pre = [query(i & 0xFFFF, names[i % len(names)]) for i in range(max(65536, len(names)))]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, 53))
def latency(count):
    s.settimeout(1)
    out = []
    for i in range(count):
        t = time.perf_counter(); s.send(pre[i]); s.recv(2048); out.append(time.perf_counter() - t)
    return out
lat = latency(3000)
s.setblocking(False)
sent = done = lost = bad = 0
pending = {}
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    while len(pending) < window:
        i = sent % len(pre)
        qid = i & 0xFFFF
        s.send(pre[i]); pending[qid] = time.perf_counter(); sent += 1
    r, _, _ = select.select([s], [], [], 0.2)
    if not r:
        lost += len(pending); pending.clear(); continue
    while True:
        try:
            data = s.recv(2048)
        except BlockingIOError:
            break
        if pending.pop(struct.unpack_from("!H", data)[0], None) is not None:
            done += 1
            if data[3] & 0x0F or data[6:8] == b"\0\0":  # an error or no answer
                bad += 1
print(json.dumps({"lat": lat, "qps": (done - bad) / seconds, "lost": lost, "bad": bad,
                  "answered": done + len(lat)}))
"""


def names(total: int) -> list[list[str]]:
    per = total // HOSTS
    return [[f"n{h}-{j}" for j in range(per)] for h in range(HOSTS)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def nsnet_server(table: list[list[str]]) -> int:
    from nsnet import ConnectOptions, Engine, NetworkSpec

    eng = Engine.open(state_dir=STATE, etc_netns_dir=ETC, notify=lambda _m: None)
    eng.network_create(NetworkSpec("dnsb", SUBNET, GATEWAY, bridge="dnsb0"))
    eng.connect("dnsb", ["client"], ConnectOptions(create=True))
    for h, aliases in enumerate(table):
        eng.connect("dnsb", [f"host{h}"], ConnectOptions(create=True, aliases=tuple(aliases)))
    pid = eng.dns.pid()
    assert pid, "nsnet's DNS server did not start"
    return pid


def nsnet_main_server(table: list[list[str]]) -> int:
    """The same state, served by the BASELINE commit's server (the engine's
    own server is stopped first; the state's schema did not change)."""
    nsnet_server(table)
    stop_daemons(STATE)
    folder = "/run/nsnet-main-dns"
    os.makedirs(folder)
    code = sh("git", "show", f"{BASELINE}:src/nsnet/dns/server.py")
    with open(os.path.join(folder, "server_main.py"), "w") as f:
        f.write(code)
    boot = (f"import sys; sys.path.insert(0, {folder!r}); import server_main; "
            "sys.exit(server_main.serve(sys.argv[1]))")
    log = open(os.path.join(STATE, "dns.log"), "a")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen([sys.executable, "-I", "-c", boot, STATE], cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)
    log.close()
    for _ in range(500):
        try:
            with open(os.path.join(STATE, "dns.status.json")) as f:
                if json.load(f).get("pid") == proc.pid:
                    return proc.pid
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise RuntimeError("the baseline DNS server did not start")


def aardvark_server(table: list[list[str]]) -> int:
    """aardvark-dns with netavark's configuration: every container listed,
    the client included."""
    bridge_and_peer("dnsb0", f"{GATEWAY}/20", "client", "vcl", f"{CLIENT}/20")
    os.makedirs(CONF)
    with open(os.path.join(CONF, "dnsb"), "w") as f:
        f.write(f"{GATEWAY}\n")
        f.write(f"{'c' * 64} {CLIENT}  client\n")
        for h, aliases in enumerate(table):
            f.write(f"{h:064x} 198.18.1.{h + 1}  host{h},{','.join(aliases)}\n")
    subprocess.Popen([AARDVARK, "--config", CONF, "-p", "53", "run"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        if os.path.exists(os.path.join(CONF, "aardvark.pid")):
            with open(os.path.join(CONF, "aardvark.pid")) as f:
                text = f.read().strip()
            if text:
                time.sleep(0.3)  # bound and listening
                return int(text)
        time.sleep(0.01)
    raise RuntimeError("aardvark-dns did not start")


def write_names(table: list[list[str]]) -> int:
    """Every name, once, in a fixed shuffled order: dnsperf's data file and
    the in-house client's list."""
    flat = [n for group in table for n in group]
    random.Random(1).shuffle(flat)
    with open(NAMES_FILE, "w") as f:
        f.writelines(f"{n} A\n" for n in flat)
    return len(flat)


def dnsperf(seconds: float) -> dict:
    out = sh("ip", "netns", "exec", "client", "dnsperf", "-s", GATEWAY, "-d", NAMES_FILE,
             "-l", str(seconds), "-c", "1", "-T", "1", "-q", str(WINDOW), "-t", "2")
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    lat = re.search(r"Average Latency \(s\):\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    done = re.search(r"Queries completed:\s+(\d+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    if not (qps and lat and lost and codes and done):
        raise RuntimeError(f"dnsperf: unexpected output: {out[-500:]}")
    return {"qps": float(qps.group(1)), "avg": float(lat.group(1)),
            "lost": int(lost.group(1)), "codes": codes.group(1).strip(),
            "answered": int(done.group(1))}


def worker(method: str, total: int, seconds: float) -> dict:
    sh("mount", "-t", "tmpfs", "nsnet-bench", "/run")
    sh("ip", "link", "set", "lo", "up")
    table = names(total)
    start = {"nsnet": nsnet_server, "nsnet@main": nsnet_main_server,
             "aardvark-dns": aardvark_server}[method]
    pid = start(table)
    try:
        count = write_names(table)
        cpu0 = cpu_seconds(pid)
        perf = dnsperf(seconds)
        cpu1 = cpu_seconds(pid)
        out = sh("ip", "netns", "exec", "client", sys.executable, "-c", LOAD, GATEWAY,
                 str(seconds), str(WINDOW), NAMES_FILE)
        cpu2 = cpu_seconds(pid)
        res = json.loads(out)
        perf["cpu_us"] = (cpu1 - cpu0) / max(perf["answered"], 1) * 1e6
        res["cpu_us"] = (cpu2 - cpu1) / max(res["answered"], 1) * 1e6
        lat = sorted(res["lat"])
        ok = res["bad"] == 0 and perf["codes"].startswith("NOERROR") and "," not in perf["codes"]
        return {"method": method, "ok": ok, "names": count, "qps": res["qps"],
                "lost": res["lost"] + res["bad"], "p50": statistics.median(lat),
                "p99": lat[int(len(lat) * 0.99) - 1], "rss_mb": rss_kb(pid) / 1024,
                "cpu_us": res["cpu_us"], "dnsperf": perf,
                "problem": "" if ok else f"dnsperf: {perf['codes']}"}
    finally:
        stop_daemons(STATE)
        if method == "aardvark-dns":
            os.kill(pid, signal.SIGTERM)


def run(method: str, total: int, seconds: float) -> dict:
    return run_sandboxed("bench.dns", method, "--names", str(total), "--seconds", str(seconds))


def _get(r: dict, key: str) -> float:
    return {"dq": lambda: r["dnsperf"]["qps"], "davg": lambda: r["dnsperf"]["avg"],
            "dcpu": lambda: r["dnsperf"]["cpu_us"]}.get(key, lambda: r[key])()


def micro(total: int, reps: int = 10, count: int = 3000) -> dict[str, list[float]]:
    """CPU time per answer of ``answer()`` -- the code a query not yet in the
    cache runs, which the hardening changed (a cache hit runs the same code
    as before) -- this tree's vs BASELINE's, alternating in one process: the
    machine's load moves both alike."""
    import importlib.util
    import ipaddress
    import struct
    import tempfile

    from nsnet.dns import server as new

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "server_main.py")
        with open(path, "w") as f:
            f.write(sh("git", "show", f"{BASELINE}:src/nsnet/dns/server.py"))
        spec = importlib.util.spec_from_file_location("server_main", path)
        assert spec and spec.loader
        old = importlib.util.module_from_spec(spec)
        sys.modules["server_main"] = old  # (dataclasses look their module up)
        spec.loader.exec_module(old)

    def query(name: str) -> bytes:
        out = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
        for label in name.split("."):
            out += bytes([len(label)]) + label.encode()
        return out + b"\0" + struct.pack("!HH", 1, 1)

    flat = [n for group in names(total) for n in group]
    queries = [query(n) for n in flat[:count]]
    fast = new.fast_answer
    sides = (("nsnet", new, fast), (DNSLIB_PATH, new, lambda *_: None),
             ("nsnet@main", old, None))
    out: dict[str, list[float]] = {label: [] for label, _, _ in sides}
    try:
        for i in range(-2, reps):  # two untimed warm-up repetitions
            for label, mod, shortcut in sides if i % 2 == 0 else sides[::-1]:
                if shortcut is not None:
                    new.fast_answer = shortcut
                zone = mod.Zone("dnsb", GATEWAY, ipaddress.ip_network(SUBNET), [])
                for n in flat:
                    zone.names[n] = ["198.18.1.1"]
                t0 = time.process_time()
                for q in queries:
                    mod.answer(zone, q, CLIENT, True)
                if i >= 0:
                    out[label].append((time.process_time() - t0) / len(queries) * 1e6)
    finally:
        new.fast_answer = fast
    return out


def report(rounds: list[dict[str, dict]], total: int, seconds: float,
           micro_us: dict[str, list[float]] | None = None) -> str:
    lines = ["# Embedded DNS: nsnet vs aardvark-dns (and nsnet before its hardening)", "",
             f"{total} names (10 endpoints x {total // HOSTS} aliases), A queries for every "
             "name in a fixed shuffled order, cycling, from a client namespace; "
             f"{len(rounds)} rounds, server order alternating; same run, same machine "
             "(shared with other work: compare within the run). Generated by "
             "`python -m bench.dns` (how each side is driven: its docstring, summarised "
             "below).", "",
             f"* dnsperf 2.10: `dnsperf -s {GATEWAY} -d NAMES -l {seconds:g} -c 1 -T 1 "
             f"-q {WINDOW} -t 2` (NAMES: the {total} names, once each).",
             f"* in-house client (one Python process): p50/p99 of 3,000 sequential queries "
             f"(the first 3,000 names: cold), then {WINDOW} in flight for {seconds:g} s.",
             "* nsnet: this tree's server as the engine starts it; nsnet@main: the server "
             f"of commit {BASELINE[:12]} (before the #12 hardening), same state, same start.",
             "* aardvark-dns 1.4 (Debian), configured as netavark does: gateway line, then "
             "`ID IPV4 IPV6 NAMES` for every container, the querying client included.", "",
             "## Medians", "",
             "CPU/answer: the server's user+system CPU time (all threads, /proc/PID/stat) "
             "during that client's run divided by the answers it got -- what a query costs "
             "the server, which the machine's load changes far less than q/s.", "",
             "| server | dnsperf q/s | dnsperf avg latency | dnsperf CPU/answer | in-house q/s "
             "| in-house CPU/answer | p50 | p99 | RSS |",
             "|---|---|---|---|---|---|---|---|---|"]
    med: dict[str, dict[str, float]] = {}
    for m in METHODS:
        rs = [r[m] for r in rounds if r.get(m, {}).get("ok")]
        if len(rs) < len(rounds):
            bad = next((r[m] for r in rounds if not r.get(m, {}).get("ok")), {})
            lines.append(f"| {m} | failed: {bad.get('problem', '')[:200]} | | | | | |")
            continue
        med[m] = {k: statistics.median(_get(r, k) for r in rs)
                  for k in ("dq", "davg", "dcpu", "qps", "cpu_us", "p50", "p99", "rss_mb")}
        v = med[m]
        lines.append(f"| {m} | {v['dq']:.0f} | {v['davg'] * 1000:.3f} ms | {v['dcpu']:.1f} us "
                     f"| {v['qps']:.0f} | {v['cpu_us']:.1f} us | {v['p50'] * 1000:.3f} ms | "
                     f"{v['p99'] * 1000:.3f} ms | {v['rss_mb']:.1f} MB |")
    a, b, c = med.get("nsnet"), med.get("aardvark-dns"), med.get("nsnet@main")
    lines.append("")
    if a and b:
        lines.append(f"nsnet / aardvark-dns: dnsperf **{a['dq'] / b['dq']:.2f}x**, in-house "
                     f"**{a['qps'] / b['qps']:.2f}x** (median q/s); CPU per answer "
                     f"{a['dcpu'] / b['dcpu']:.2f}x / {a['cpu_us'] / b['cpu_us']:.2f}x "
                     "aardvark-dns's (dnsperf / in-house).")
    if a and c:
        per_round = [r["nsnet"]["dnsperf"]["qps"] / r["nsnet@main"]["dnsperf"]["qps"]
                     for r in rounds if r["nsnet"].get("ok") and r["nsnet@main"].get("ok")]
        lines.append(f"Hardened / before hardening: dnsperf **{a['dq'] / c['dq']:.3f}x**, "
                     f"in-house **{a['qps'] / c['qps']:.3f}x** (median q/s; per round, "
                     f"dnsperf: {', '.join(f'{x:.3f}' for x in per_round)}); CPU per "
                     f"answer **{a['dcpu'] / c['dcpu']:.3f}x** / "
                     f"**{a['cpu_us'] / c['cpu_us']:.3f}x** (dnsperf / in-house; lower is "
                     "better). Target: no more than 5% worse.")
    if micro_us:
        med_us = {m: statistics.median(v) for m, v in micro_us.items()}
        lines += ["", "## The query path, in one process", "",
                  f"`answer()` -- what a query not yet cached runs (a cache hit runs the same "
                  f"code as before) -- on the same {total} names: this tree's, this tree's "
                  f"with its dnslib-free fast path switched off (the hardened full path), and "
                  f"commit {BASELINE[:12]}'s; {len(micro_us['nsnet'])} alternating "
                  "repetitions of 3,000 queries, CPU time per query:", ""]
        for m, v in micro_us.items():
            lines.append(f"* {m}: median {med_us[m]:.1f} us "
                         f"({', '.join(f'{x:.1f}' for x in v)})")
        base = med_us["nsnet@main"]
        lines += ["", f"Hardened full path / before: **{med_us[DNSLIB_PATH] / base:.3f}x** "
                  f"(target <= 1.05); with the fast path: **{med_us['nsnet'] / base:.3f}x**."]
    lines += ["", "## Every round", "",
              "| round | server | dnsperf q/s | dnsperf avg | dnsperf CPU/answer | lost | "
              "in-house q/s | in-house CPU/answer | p50 | p99 | RSS |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, rnd in enumerate(rounds, 1):
        for m, r in rnd.items():
            if not r.get("ok"):
                lines.append(f"| {i} | {m} | failed | | | | | | | | |")
                continue
            d = r["dnsperf"]
            lines.append(f"| {i} | {m} | {d['qps']:.0f} | {d['avg'] * 1000:.3f} ms | "
                         f"{d['cpu_us']:.1f} us | {d['lost']} + {r['lost']} | {r['qps']:.0f} | "
                         f"{r['cpu_us']:.1f} us | "
                         f"{r['p50'] * 1000:.3f} ms | {r['p99'] * 1000:.3f} ms | "
                         f"{r['rss_mb']:.1f} MB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.names, args.seconds)))
        return
    rounds = []
    for i in range(args.rounds):
        order = METHODS if i % 2 == 0 else tuple(reversed(METHODS))
        rounds.append({m: run(m, args.names, args.seconds) for m in order})
    flat = {f"{m}#{i}": r for i, rnd in enumerate(rounds) for m, r in rnd.items()}
    emit(report(rounds, args.names, args.seconds, micro(args.names)), args.out, flat)


if __name__ == "__main__":
    main()
