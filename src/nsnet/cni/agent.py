"""The CNI agent: a resident process that runs plugin commands for clients.

A runtime execs the plugin four times per container; CPython's start-up and
nsnet's imports would be paid on each.  The installed launcher therefore
answers VERSION in the shell and hands ADD/DEL/CHECK/STATUS/GC to this agent
over a unix socket in the state directory (``cni.sock``, root only); the
client (:mod:`nsnet.cni.client`) starts the agent when it is not running,
and falls back to running the command itself if it cannot.  The agent does
exactly what the in-process plugin does (same code, same engine lock, same
journal), one request at a time, and exits after a minute without requests.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys

from .client import parse_request
from .plugin import run_request

SOCKET, PIDFILE = "cni.sock", "cni.pid"
IDLE = float(os.environ.get("NSNET_CNI_AGENT_IDLE", "60"))


def handle(conn: socket.socket) -> None:
    chunks = []
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    env, stdin = parse_request(b"".join(chunks))
    rc, out, err = run_request(env, stdin.decode(errors="replace"))
    body = out.encode()
    conn.sendall(rc.to_bytes(4, "big", signed=True) + len(body).to_bytes(4, "big") + body
                 + err.encode())


def serve(state_dir: str) -> int:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, PIDFILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another agent serves this state
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    path = os.path.join(state_dir, SOCKET)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        srv.bind(path)
    finally:
        os.umask(old)
    srv.listen(256)
    srv.settimeout(IDLE)
    try:
        while True:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                break
            with conn:
                try:
                    handle(conn)
                except Exception as exc:  # one bad request never takes the agent down
                    print(f"nsnet-cni agent: {exc!r}", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        srv.close()
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
