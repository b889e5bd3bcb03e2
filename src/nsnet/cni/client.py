"""The CNI client the installed launcher runs.  Start-up is the whole cost
here, so it imports only ``os``, ``sys`` and ``_socket`` (``json`` alone
would cost ~10 ms) and speaks a tiny binary protocol to the agent
(:mod:`nsnet.cni.agent`): it starts the agent when none runs and falls back
to running the plugin in-process when no agent can serve.

Request: 4-byte length of an environment block ("KEY=VALUE\\0"...), the
block, then stdin, then EOF.  Reply: 4-byte exit code, 4-byte stdout
length, stdout, then stderr until EOF.
"""

import os
import sys
import time
from _socket import AF_UNIX, SHUT_WR, SOCK_STREAM
from _socket import socket as _sock

START_WAIT = 10.0


def request(env: dict, stdin: bytes) -> bytes:
    block = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    return len(block).to_bytes(4, "big") + block + stdin


def parse_request(data: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(data[:4], "big")
    block, stdin = data[4:4 + size], data[4 + size:]
    env = {}
    for item in block.split(b"\0"):
        if item:
            key, _, value = item.decode(errors="replace").partition("=")
            env[key] = value
    return env, stdin


def _recv_all(s: _sock) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _ask(path: str, payload: bytes) -> bytes:
    s = _sock(AF_UNIX, SOCK_STREAM)
    try:
        s.connect(path)
        s.sendall(payload)
        s.shutdown(SHUT_WR)
        return _recv_all(s)
    finally:
        s.close()


def state_dir(raw: bytes) -> str:
    """The config's "stateDir" without a JSON parser (a plain string is all
    nsnet's configurations use); else NSNET_STATE_DIR or the default."""
    at = raw.find(b'"stateDir"')
    if at >= 0:
        rest = raw[at + 10:].lstrip()
        if rest.startswith(b":"):
            rest = rest[1:].lstrip()
            if rest.startswith(b'"'):
                end = rest.find(b'"', 1)
                value = rest[1:end]
                if end > 0 and b"\\" not in value:
                    return value.decode()
    return os.environ.get("NSNET_STATE_DIR") or "/var/lib/nsnet"


def _start_agent(state: str) -> None:
    import subprocess

    subprocess.Popen([sys.executable, "-sE", "-m", "nsnet.cni.agent", state],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _in_process(raw: bytes) -> None:
    import subprocess

    sys.exit(subprocess.run([sys.executable, "-sE", "-m", "nsnet.cni"], input=raw).returncode)


def main() -> None:
    raw = sys.stdin.buffer.read()
    state = state_dir(raw)
    path = os.path.join(state, "cni.sock")
    payload = request({k: v for k, v in os.environ.items()
                       if k.startswith(("CNI_", "NSNET_"))}, raw)
    deadline = 0.0
    while True:
        try:
            reply = _ask(path, payload)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if not deadline:
                if os.path.exists(state) and not os.path.isdir(state):
                    _in_process(raw)  # let the plugin report the broken state dir
                _start_agent(state)
                deadline = time.monotonic() + START_WAIT
            elif time.monotonic() > deadline:
                _in_process(raw)
            time.sleep(0.002)
        except OSError:
            _in_process(raw)
    if len(reply) < 8:
        _in_process(raw)
    rc = int.from_bytes(reply[:4], "big", signed=True)
    size = int.from_bytes(reply[4:8], "big")
    sys.stdout.buffer.write(reply[8:8 + size])
    sys.stdout.flush()
    sys.stderr.buffer.write(reply[8 + size:])
    sys.exit(rc)


if __name__ == "__main__":
    main()
