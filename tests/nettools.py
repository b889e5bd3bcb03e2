"""Tiny TCP/UDP servers and clients for firewall tests, run inside namespaces
with ``nsenter``.  A server answers every connection or datagram with the
address it came from, so a test sees what NAT did.

    python3 nettools.py serve tcp|udp PORT...
    python3 nettools.py ask tcp|udp IP PORT [SRC_PORT]   (prints the answer; exit 1 if none)
"""

from __future__ import annotations

import socket
import sys
import threading

TIMEOUT = 1.5


def _serve_tcp(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    while True:
        conn, peer = srv.accept()
        with conn:
            conn.sendall(f"{peer[0]} {port}\n".encode())


def _serve_udp(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", port))
    while True:
        _, peer = srv.recvfrom(2048)
        srv.sendto(f"{peer[0]} {port}\n".encode(), peer)


def serve(proto: str, ports: list[int]) -> None:
    target = _serve_tcp if proto == "tcp" else _serve_udp
    for port in ports:
        threading.Thread(target=target, args=(port,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def ask(proto: str, ip: str, port: int, src_port: int = 0) -> str | None:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(TIMEOUT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if src_port:
            s.bind(("0.0.0.0", src_port))
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
