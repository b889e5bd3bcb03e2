"""DNS helpers run inside namespaces: a fake upstream server and a raw client.

    python3 dnstools.py upstream IP [LOG]      a fake upstream on IP:53, UDP and TCP
    python3 dnstools.py ask SERVER NAME [TYPE] [tcp]   prints rcode and answers

The upstream answers NAME.test with A 203.0.113.7 and anything else with
NXDOMAIN; ``big.test`` has 40 A records (203.0.113.1-40), too many for a
512-byte UDP answer: over UDP it is always sent truncated (TC set, no
records), over TCP whole.  Every query it gets is appended to LOG (when
given) as ``udp NAME`` or ``tcp NAME``, so a test can prove a query never
reached it.  Queries it cannot parse get FORMERR (it never dies).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

BIG = [f"203.0.113.{i}" for i in range(1, 41)]


class Upstream:
    def __init__(self, ip: str, log: str | None) -> None:
        self.ip, self.log = ip, log
        self.lock = threading.Lock()

    def record(self, proto: str, name: str) -> None:
        if self.log:
            with self.lock, open(self.log, "a") as f:
                f.write(f"{proto} {name}\n")

    def reply(self, data: bytes, proto: str) -> bytes:
        try:
            query = DNSRecord.parse(data)
            name = str(query.q.qname).rstrip(".").lower()
        except Exception:  # garbage: FORMERR with its ID
            self.record(proto, "?")
            return data[:2] + struct.pack("!HHHHH", 0x8001, 0, 0, 0, 0) if len(data) >= 2 else b""
        self.record(proto, name)
        reply = query.reply()
        if name == "big.test":
            if proto == "udp":
                reply.header.tc = 1
            else:
                for ip in BIG:
                    reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(ip), ttl=60))
        elif name.endswith(".test"):
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("203.0.113.7"), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        try:
            return reply.pack()
        except Exception:
            return data[:2] + struct.pack("!HHHHH", 0x8002, 0, 0, 0, 0)

    def serve_udp(self, sock: socket.socket) -> None:
        while True:
            data, peer = sock.recvfrom(4096)
            wire = self.reply(data, "udp")
            if wire:
                sock.sendto(wire, peer)

    def serve_tcp(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self.tcp_client, args=(conn,), daemon=True).start()

    def tcp_client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                size = struct.unpack("!H", _read(conn, 2))[0]
                wire = self.reply(_read(conn, size), "tcp")
                conn.sendall(struct.pack("!H", len(wire)) + wire)
            except (OSError, struct.error):
                pass


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def upstream(ip: str, log: str | None = None) -> None:
    server = Upstream(ip, log)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET  # an IPv6 upstream too
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((ip, 53))
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((ip, 53))
    tcp.listen(64)
    threading.Thread(target=server.serve_tcp, args=(tcp,), daemon=True).start()
    print("ready", flush=True)
    server.serve_udp(udp)


def ask(server: str, name: str, qtype: str = "A", tcp: bool = False) -> str:
    q = DNSRecord.question(name, qtype)
    t0 = time.monotonic()
    try:
        raw = q.send(server, 53, tcp=tcp, timeout=5)
    except OSError as exc:
        return f"ERROR {exc} {time.monotonic() - t0:.2f}s"
    r = DNSRecord.parse(raw)
    answers = " ".join(sorted(str(rr.rdata) for rr in r.rr))
    return f"{RCODE.get(r.header.rcode)} {answers} {time.monotonic() - t0:.2f}s"


# ------------------------------------------------ used by the tests themselves
def start_upstream(ns_path: str, ip: str, log: str | None = None) -> subprocess.Popen:
    """This file's upstream at ``ip`` in the namespace at ``ns_path``; the
    caller stops it by its PID."""
    proc = subprocess.Popen(["nsenter", f"--net={ns_path}", sys.executable, __file__,
                             "upstream", ip, *([log] if log else [])],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    return proc


def dig(ns_path: str, *args: str) -> dict:
    """Ask with dig (bind9's client) from the namespace at ``ns_path``."""
    out = subprocess.run(["nsenter", f"--net={ns_path}", "dig", "+tries=1", "+time=3", *args],
                         capture_output=True, text=True, timeout=30).stdout
    return parse_dig(out)


def parse_dig(out: str) -> dict:
    """dig's output: status, flags, section counts, and the records (split
    in fields) of the answer and authority sections."""
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([a-z ]*);", out)
    counts = dict(re.findall(r"(QUERY|ANSWER|AUTHORITY|ADDITIONAL): (\d+)", out))
    sections: dict[str, list[list[str]]] = {"ANSWER": [], "AUTHORITY": []}
    current = None
    for line in out.splitlines():
        head = re.match(r";; (\w+) SECTION:", line)
        if head:
            current = head.group(1)
        elif not line.strip():
            current = None
        elif current in sections:
            sections[current].append(line.split())
    return {"status": status.group(1) if status else None, "raw": out,
            "flags": flags.group(1).split() if flags else [],
            "counts": {k: int(v) for k, v in counts.items()}, **sections}


def is_nodata(msg: dict) -> bool:
    """NOERROR, no answer, and an authority section that is empty or an SOA
    (RFC 2308's NODATA)."""
    return (msg["status"] == "NOERROR" and msg["counts"].get("ANSWER") == 0
            and not msg["ANSWER"]
            and all(rr[3] == "SOA" for rr in msg["AUTHORITY"]))


def log_lines(path: str) -> list[str]:
    """What an upstream's LOG recorded (nothing yet: [])."""
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def in_netns(ns_path: str) -> int:
    """An fd of a namespace, for nsnet.kernel.entered (sockets opened there
    live there)."""
    return os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        upstream(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        print(ask(sys.argv[2], sys.argv[3], *(sys.argv[4:5] or ["A"]),
                  tcp=sys.argv[5:6] == ["tcp"]))
