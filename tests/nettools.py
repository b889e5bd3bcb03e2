"""Tiny TCP/UDP servers and clients for firewall tests, run inside namespaces
with ``nsenter``.  A server answers every connection or datagram with the
address it came from, so a test sees what NAT did.  Servers listen on
IPv4 and, where the namespace has it, IPv6; a client asks over the family
of the address it is given.

    python3 nettools.py serve tcp|udp PORT...
    python3 nettools.py ask tcp|udp IP PORT [SRC_PORT]   (prints the answer; exit 1 if none)
"""

from __future__ import annotations

import socket
import sys
import threading

TIMEOUT = 1.5


def _bound(family: int, kind: int, port: int) -> socket.socket | None:
    """A socket on every address of ``family`` (IPv6: v6 only, beside the
    IPv4 one, so IPv4 answers stay as they were); None where the namespace
    cannot have one (IPv6 off)."""
    srv = socket.socket(family, kind)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if family == socket.AF_INET6:
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        srv.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except OSError:
        srv.close()
        if family == socket.AF_INET:
            raise
        return None
    return srv


def _serve_tcp(port: int, family: int = socket.AF_INET) -> None:
    srv = _bound(family, socket.SOCK_STREAM, port)
    if srv is None:
        return
    srv.listen(64)
    while True:
        conn, peer = srv.accept()
        with conn:
            conn.sendall(f"{peer[0]} {port}\n".encode())


def _serve_udp(port: int, family: int = socket.AF_INET) -> None:
    srv = _bound(family, socket.SOCK_DGRAM, port)
    if srv is None:
        return
    while True:
        _, peer = srv.recvfrom(2048)
        srv.sendto(f"{peer[0]} {port}\n".encode(), peer)


def serve(proto: str, ports: list[int]) -> None:
    target = _serve_tcp if proto == "tcp" else _serve_udp
    for port in ports:
        for family in (socket.AF_INET, socket.AF_INET6):
            threading.Thread(target=target, args=(port, family), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def ask(proto: str, ip: str, port: int, src_port: int = 0) -> str | None:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    v6 = ":" in ip  # an IPv6 address: asked over IPv6
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind) as s:
        s.settimeout(TIMEOUT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if src_port:
            s.bind(("::" if v6 else "0.0.0.0", src_port))
        try:
            if proto == "tcp":
                s.connect((ip, port))
                return s.recv(256).decode().strip()
            s.sendto(b"?", (ip, port))
            return s.recvfrom(256)[0].decode().strip()
        except OSError:
            return None


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
    answer = ask(sys.argv[2], sys.argv[3], int(sys.argv[4]),
                 int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    print(answer or "")
    sys.exit(0 if answer else 1)
