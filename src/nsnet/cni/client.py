"""The CNI client the installed launcher runs.  Start-up is the whole cost
here, so it imports only ``os``, ``sys`` and ``_socket`` (``json`` alone
would cost ~10 ms) and speaks a tiny binary protocol to the agent
(:mod:`nsnet.cni.agent`): it starts the agent when none runs and falls back
to running the plugin in-process when no agent can serve.

An agent acts in its own mount and network namespaces, so a caller may only
use one whose namespaces are its own: the socket's name carries the caller's
mount and network namespace (``STATE/cni/cni-MNT-NET.sock``), the client
checks the agent's (SO_PEERCRED: root, same namespaces) and the agent checks
the caller's.  The socket must be root's, in root's 0700 ``cni`` directory of
a root-owned state directory nobody else may write.

Request: 4-byte length of an environment block ("KEY=VALUE\\0"...), the
block, then stdin, then EOF.  Reply: one byte ``ACK`` once the agent has
the whole request (the command may then wait for the state lock), then a
4-byte exit code, 4-byte stdout length, stdout, then stderr until EOF.  An
agent that does not acknowledge in ``ACK_WAIT`` never runs the request (its
acknowledgement fails once the client is gone), so the client then runs the
plugin itself.  Exit code ``REFUSED`` means the agent will not serve this
caller: the client runs the plugin itself too.
"""

import os
import sys
import time
from _socket import AF_UNIX, SHUT_WR, SO_PEERCRED, SOCK_STREAM, SOL_SOCKET
from _socket import socket as _sock

START_WAIT = 10.0  # for a starting agent's socket to appear
ACK_WAIT = 10.0  # connect, hand over the request, have it acknowledged
REPLY_WAIT = 600.0  # the agent runs the command (it may wait for the state lock)
REFUSED = -2
SUN_PATH_MAX = 107  # sockaddr_un's path, without its NUL
ACK = b"\x06"
DEFAULT_STATE_DIR = "/var/lib/nsnet"
ENV_PREFIXES = ("CNI_", "NSNET_")


class Untrusted(Exception):
    """The socket or its agent is not one this caller may use."""


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


# ------------------------------------------------------------ namespaces
def ns_ids(pid: str = "self") -> tuple[int, ...]:
    """The mount and network namespace inodes and the root directory of a
    process: what an agent must share with the callers it serves."""
    root = os.stat(f"/proc/{pid}/root")
    return (os.stat(f"/proc/{pid}/ns/mnt").st_ino, os.stat(f"/proc/{pid}/ns/net").st_ino,
            root.st_dev, root.st_ino)


def socket_name(ids: tuple[int, ...] | None = None) -> str:
    mnt, net = (ids or ns_ids())[:2]
    return f"cni-{mnt}-{net}.sock"


def peer(s: _sock) -> tuple[int, int]:
    """The pid (0 if in a pid namespace we cannot see) and uid at the other end."""
    cred = s.getsockopt(SOL_SOCKET, SO_PEERCRED, 12)
    return int.from_bytes(cred[0:4], sys.byteorder), int.from_bytes(cred[4:8], sys.byteorder)


def same_namespaces(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        return ns_ids(str(pid)) == ns_ids()
    except OSError:
        return False


# -------------------------------------------------------- reading stdin
def _skip_ws(raw: bytes, i: int) -> int:
    while i < len(raw) and raw[i] in b" \t\r\n":
        i += 1
    return i


def _end_of_string(raw: bytes, i: int) -> int:
    """``raw[i]`` is an opening quote: the index after the closing one."""
    i += 1
    while i < len(raw):
        c = raw[i]
        if c == 0x5C:  # backslash: skip the escaped character
            i += 2
            continue
        if c == 0x22:
            return i + 1
        i += 1
    raise ValueError("unterminated string")


def _end_of_value(raw: bytes, i: int) -> int:
    """Skip one JSON value (nested ones by bracket depth, strings whole)."""
    if i < len(raw) and raw[i] == 0x22:
        return _end_of_string(raw, i)
    depth = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x22:
            i = _end_of_string(raw, i)
            continue
        if c in b"[{":
            depth += 1
        elif c in b"]}":
            if depth == 0:
                return i
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == 0x2C and depth == 0:
            return i
        i += 1
    raise ValueError("truncated value")


def top_level_string(raw: bytes, key: bytes) -> str | None:
    """The plain string value of ``key`` at the top level of a JSON object
    (nested objects such as ``args`` or ``runtimeConfig`` are skipped);
    None if absent.  ValueError if ``raw`` is not a JSON object or the value
    is not a plain string."""
    i = _skip_ws(raw, 0)
    if i >= len(raw) or raw[i] != 0x7B:
        raise ValueError("not a JSON object")
    i = _skip_ws(raw, i + 1)
    found = None
    while i < len(raw) and raw[i] != 0x7D:
        if raw[i] != 0x22:
            raise ValueError("expected a key")
        end = _end_of_string(raw, i)
        name = raw[i + 1:end - 1]
        i = _skip_ws(raw, end)
        if i >= len(raw) or raw[i] != 0x3A:
            raise ValueError("expected ':'")
        i = _skip_ws(raw, i + 1)
        vend = _end_of_value(raw, i)
        if name == key:
            value = raw[i:vend]
            if value[:1] != b'"' or b"\\" in value or len(value) < 2:
                raise ValueError(f"{key.decode()} is not a plain string")
            found = value[1:-1].decode()
        i = _skip_ws(raw, vend)
        if i < len(raw) and raw[i] == 0x2C:
            i = _skip_ws(raw, i + 1)
    if i >= len(raw):
        raise ValueError("truncated object")
    return found


def state_dir(raw: bytes) -> str:
    """The plugin's own top-level "stateDir"; else NSNET_STATE_DIR or the
    default.  ValueError if the input is not a JSON object."""
    return (top_level_string(raw, b"stateDir") or os.environ.get("NSNET_STATE_DIR")
            or DEFAULT_STATE_DIR)


def _root_dir(path: str, others: int) -> bool:
    st = os.lstat(path)  # FileNotFoundError if it does not exist yet
    return (st.st_mode & 0o170000) == 0o040000 and st.st_uid == 0 and not st.st_mode & others


def agent_dir(state: str) -> str:
    return os.path.join(state, "cni")


def trusted_dir(state: str) -> bool:
    """The state directory root's and writable by root only (not a symlink),
    its ``cni`` directory root's 0700 (FileNotFoundError if either is missing)."""
    return _root_dir(state, 0o022) and _root_dir(agent_dir(state), 0o077)


# ------------------------------------------------------------- talking
def _recv_all(s: _sock) -> bytes:
    chunks = []
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _ask(path: str, payload: bytes) -> bytes:
    st = os.lstat(path)  # FileNotFoundError: no agent yet
    if (st.st_mode & 0o170000) != 0o140000 or st.st_uid != 0:
        raise Untrusted(f"{path} is not root's socket")
    s = _sock(AF_UNIX, SOCK_STREAM)
    try:
        s.settimeout(ACK_WAIT)
        s.connect(path)
        pid, uid = peer(s)
        if uid != 0 or not same_namespaces(pid):
            raise Untrusted("the agent is not root in this caller's namespaces")
        s.sendall(payload)
        s.shutdown(SHUT_WR)
        first = s.recv(1)
        if first != ACK:
            return first + _recv_all(s)  # REFUSED (or a broken reply: in-process)
        s.settimeout(REPLY_WAIT)
        return _recv_all(s)
    finally:
        s.close()


def _python(*args: str) -> list[str]:
    # -I: the caller's cwd, PYTHONPATH and user site never reach nsnet's imports
    return [sys.executable, "-I", *args]


def helper_env() -> dict:
    """The caller's environment without PYTHON* variables: -I keeps them from
    the helper itself, this from whatever the helper starts in turn."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _start_agent(state: str) -> None:
    import subprocess

    subprocess.Popen(_python("-m", "nsnet.cni.agent", state),
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                     cwd="/", env=helper_env())


def _in_process(raw: bytes) -> None:
    import subprocess

    sys.exit(subprocess.run(_python("-m", "nsnet.cni"), input=raw, cwd="/",
                            env=helper_env()).returncode)


def _agent_allowed() -> bool:
    """A valid NSNET_CNI_AGENT_IDLE (else the plugin reports it in-process)."""
    text = os.environ.get("NSNET_CNI_AGENT_IDLE")
    if text is None:
        return True
    try:
        value = float(text)
    except ValueError:
        return False
    return 0 < value < 86400


def main() -> None:
    raw = sys.stdin.buffer.read()
    try:
        state = state_dir(raw)
    except ValueError:
        _in_process(raw)  # the plugin answers the decode error; no agent is started
    if not _agent_allowed() or os.getuid() != 0:
        _in_process(raw)
    path = os.path.join(agent_dir(state), socket_name())
    if len(path.encode()) > SUN_PATH_MAX:
        _in_process(raw)  # no agent could listen there
    payload = request({k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}, raw)
    deadline = 0.0
    while True:
        try:
            if not trusted_dir(state):  # (also a file there: the plugin reports it)
                raise Untrusted(f"{state} or its cni directory is not root's alone")
            reply = _ask(path, payload)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if not deadline:
                _start_agent(state)
                deadline = time.monotonic() + START_WAIT
            elif time.monotonic() > deadline:
                _in_process(raw)
            time.sleep(0.002)
        except (OSError, Untrusted):
            _in_process(raw)
    if len(reply) < 8:
        _in_process(raw)
    rc = int.from_bytes(reply[:4], "big", signed=True)
    if rc == REFUSED:
        _in_process(raw)
    size = int.from_bytes(reply[4:8], "big")
    sys.stdout.buffer.write(reply[8:8 + size])
    sys.stdout.flush()
    sys.stderr.buffer.write(reply[8 + size:])
    sys.exit(rc)


if __name__ == "__main__":
    main()
