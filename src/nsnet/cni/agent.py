"""The CNI agent: a resident process that runs plugin commands for clients.

A runtime execs the plugin four times per container; CPython's start-up and
nsnet's imports would be paid on each.  The installed launcher therefore
answers VERSION in the shell and hands ADD/DEL/CHECK/STATUS/GC to this agent
over a unix socket in the state directory; the client
(:mod:`nsnet.cni.client`) starts the agent when it is not running, and falls
back to running the command itself if it cannot.  The agent does exactly
what the in-process plugin does (same code, same engine lock, same journal),
one command at a time, and exits after a minute without requests.

An agent acts in the mount and network namespaces it was started in, so it
serves only root callers in exactly those (and the same root directory):
one agent per (state directory, mount namespace, network namespace), named
``STATE/cni/cni-MNT-NET.sock`` and ``STATE/cni-MNT-NET.pid``; any other
caller is answered ``REFUSED``
and runs the plugin itself.  Each connection is read by its own thread under
a deadline, so a client that sends half a request and waits delays nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import socket
import sys
import threading
import time

from .client import (
    ACK,
    REFUSED,
    agent_dir,
    parse_request,
    peer,
    same_namespaces,
    socket_name,
    trusted_dir,
)
from .plugin import run_request

IDLE_DEFAULT = 60.0
READ_WAIT = 10.0  # a whole request, from accept to EOF
WRITE_WAIT = 10.0  # the reply
MAX_REQUEST = 8 << 20


def idle_timeout(text: str | None) -> float:
    """NSNET_CNI_AGENT_IDLE in seconds (the client refuses bad values: this
    default only guards a direct start)."""
    try:
        value = float(text) if text is not None else IDLE_DEFAULT
    except ValueError:
        return IDLE_DEFAULT
    return value if math.isfinite(value) and 0 < value < 86400 else IDLE_DEFAULT


def pidfile_name(sock: str) -> str:
    return sock[:-len(".sock")] + ".pid"


class Agent:
    def __init__(self) -> None:
        # one request at a time, as runtimes exec plugins (each one's
        # environment is its own: run_request touches no process globals)
        self.run_lock = threading.Lock()
        self.active = 0
        self.count_lock = threading.Lock()

    def read_request(self, conn: socket.socket) -> bytes:
        deadline = time.monotonic() + READ_WAIT
        chunks, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the client did not send its request in time")
            conn.settimeout(left)
            chunk = conn.recv(1 << 16)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REQUEST:
                raise ValueError("request too large")
            chunks.append(chunk)

    def handle(self, conn: socket.socket) -> None:
        # read it all first (under the deadline): a refusal then reaches the
        # client instead of a reset for unread data
        data = self.read_request(conn)
        pid, uid = peer(conn)
        if uid != 0 or not same_namespaces(pid):
            conn.settimeout(WRITE_WAIT)
            conn.sendall(REFUSED.to_bytes(4, "big", signed=True) + bytes(4))
            return
        env, stdin = parse_request(data)
        conn.settimeout(WRITE_WAIT)
        conn.sendall(ACK)  # fails if the client gave up: then the request is not run
        with self.run_lock:
            rc, out, err = run_request(env, stdin)
        body = out.encode()
        conn.settimeout(WRITE_WAIT)
        conn.sendall(rc.to_bytes(4, "big", signed=True) + len(body).to_bytes(4, "big") + body
                     + err.encode())

    def serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.handle(conn)
        except Exception as exc:  # one bad request never takes the agent down
            print(f"nsnet-cni agent: {exc!r}", file=sys.stderr, flush=True)
        finally:
            with self.count_lock:
                self.active -= 1

    def busy(self) -> bool:
        with self.count_lock:
            return self.active > 0

    def loop(self, srv: socket.socket, idle: float) -> None:
        srv.settimeout(idle)
        while True:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                if self.busy():
                    continue
                break
            with self.count_lock:
                self.active += 1
            threading.Thread(target=self.serve_one, args=(conn,), daemon=True).start()


def serve(state_dir: str) -> int:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(agent_dir(state_dir), 0o700)
    if not trusted_dir(state_dir):
        return 1  # no client would talk to a socket here
    sock = socket_name()
    fd = os.open(os.path.join(state_dir, pidfile_name(sock)),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return 0  # another agent serves these namespaces
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    path = os.path.join(agent_dir(state_dir), sock)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        srv.bind(path)
    finally:
        os.umask(old)
    srv.listen(256)
    # stopped by SIGTERM (nsnet.dns.stop_daemon): remove the socket on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        Agent().loop(srv, idle_timeout(os.environ.get("NSNET_CNI_AGENT_IDLE")))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        srv.close()
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
