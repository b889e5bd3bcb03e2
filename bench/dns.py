"""Embedded DNS: nsnet's server vs aardvark-dns, same names, same client.

    python -m bench.dns [--names 10000] [--seconds 5] [--out bench/results/dns.md]

Each server runs in its own sandbox (``unshare --mount --net``) serving
10,000 names (10 endpoints x 1,000 aliases) on the gateway 198.18.0.1; a
client namespace at 198.18.0.2 asks for random existing names (A records):

* latency: one query at a time, p50/p99 over 3,000 queries;
* throughput: a window of 32 queries in flight for a few seconds (the
  client is one Python process on the same 2 cores, so both servers are
  measured against the same, modest, load generator);
* RSS of the server process after the load.

aardvark-dns is Debian's (podman's DNS server), configured the way netavark
configures it: a file per network, names comma-separated per container.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

from .common import bridge_and_peer, emit, run_sandboxed, sh, stop_daemons

AARDVARK = "/usr/lib/podman/aardvark-dns"
SUBNET, GATEWAY, CLIENT = "198.18.0.0/20", "198.18.0.1", "198.18.0.2"
STATE, ETC, CONF = "/run/nsnet-state", "/run/nsnet-etc", "/run/aardvark"
HOSTS = 10

LOAD = r"""
import json, random, socket, struct, sys, time
server, seconds, window, names = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)
rng = random.Random(7)
pre = [query(i & 0xFFFF, rng.choice(names)) for i in range(65536)]
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
import select
while time.perf_counter() < end:
    while len(pending) < window:
        qid = sent & 0xFFFF
        s.send(pre[qid]); pending[qid] = time.perf_counter(); sent += 1
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
print(json.dumps({"lat": lat, "qps": (done - bad) / seconds, "lost": lost, "bad": bad}))
"""


def names(total: int) -> list[list[str]]:
    per = total // HOSTS
    return [[f"n{h}-{j}" for j in range(per)] for h in range(HOSTS)]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def nsnet_server(table: list[list[str]]) -> int:
    from nsnet import ConnectOptions, Engine, NetworkSpec

    eng = Engine(state_dir=STATE, etc_netns_dir=ETC, notify=lambda _m: None)
    eng.network_create(NetworkSpec("dnsb", SUBNET, GATEWAY, bridge="dnsb0"))
    eng.connect("dnsb", ["client"], ConnectOptions(create=True))
    for h, aliases in enumerate(table):
        eng.connect("dnsb", [f"host{h}"], ConnectOptions(create=True, aliases=tuple(aliases)))
    pid = eng.dns.pid()
    assert pid, "nsnet's DNS server did not start"
    return pid


def aardvark_server(table: list[list[str]]) -> int:
    bridge_and_peer("dnsb0", f"{GATEWAY}/20", "client", "vcl", f"{CLIENT}/20")
    os.makedirs(CONF)
    with open(os.path.join(CONF, "dnsb"), "w") as f:
        f.write(f"{GATEWAY}\n")
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


def worker(method: str, total: int, seconds: float) -> dict:
    sh("mount", "-t", "tmpfs", "nsnet-bench", "/run")
    sh("ip", "link", "set", "lo", "up")
    table = names(total)
    pid = (nsnet_server if method == "nsnet" else aardvark_server)(table)
    try:
        flat = [n for group in table for n in group]
        out = sh("ip", "netns", "exec", "client", sys.executable, "-c", LOAD, GATEWAY,
                 str(seconds), "32", *random.Random(1).sample(flat, min(len(flat), 2000)))
        res = json.loads(out)
        lat = sorted(res["lat"])
        return {"method": method, "ok": res["bad"] == 0, "names": total, "qps": res["qps"],
                "lost": res["lost"] + res["bad"], "p50": statistics.median(lat),
                "p99": lat[int(len(lat) * 0.99) - 1], "rss_mb": rss_kb(pid) / 1024}
    finally:
        stop_daemons(STATE)
        if method != "nsnet":
            os.kill(pid, signal.SIGTERM)


def run(method: str, total: int, seconds: float) -> dict:
    return run_sandboxed("bench.dns", method, "--names", str(total), "--seconds", str(seconds))


def report(res: dict[str, dict], total: int) -> str:
    lines = ["# Embedded DNS: nsnet vs aardvark-dns", "",
             f"{total} names, A queries for random existing names from a client namespace; "
             "same run, same machine. Generated by `python -m bench.dns`.", "",
             "| server | answers/s (32 in flight) | unanswered or wrong | p50 | p99 | RSS |",
             "|---|---|---|---|---|---|"]
    for name, r in res.items():
        if not r.get("ok"):
            lines.append(f"| {name} | failed: {r.get('problem')} | | | | |")
            continue
        lines.append(f"| {name} | {r['qps']:.0f} | {r['lost']} | {r['p50'] * 1000:.3f} ms | "
                     f"{r['p99'] * 1000:.3f} ms | {r['rss_mb']:.1f} MB |")
    a, b = res.get("nsnet", {}), res.get("aardvark-dns", {})
    if a.get("ok") and b.get("ok"):
        lines += ["", f"nsnet / aardvark-dns qps: **{a['qps'] / b['qps']:.2f}x** "
                  f"(target >= 1.0x); nsnet p99 {a['p99'] * 1000:.3f} ms (target < 2 ms); "
                  f"nsnet RSS {a['rss_mb']:.1f} MB (target <= 40 MB)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.names, args.seconds)))
        return
    res = {m: run(m, args.names, args.seconds) for m in ("nsnet", "aardvark-dns")}
    emit(report(res, args.names), args.out, res)


if __name__ == "__main__":
    main()
