"""The recording seam: every change nsnet asks of the kernel, as commands.

This layer is the only code that talks to the kernel, so it is the one
place where what nsnet *does* can be observed: rtnetlink batches
(:meth:`Netlink.batch`), namespaces made and removed, sysctl writes, nft
transactions (the firewall driver reports the JSON it applies) and the
files nsnet writes (resolv.conf).  With a :class:`Recorder` active (only
``--explain`` makes one), each of them is appended, in order, to the step
that issued it, rendered as the command a person could type for the same
kernel state: ``ip``, ``bridge``, ``tc``, ``sysctl``, ``nft``.

How a request becomes a command: every request builder (``req_*``) attaches
its command to the :class:`Request` (``cmd``, built only when called), with
:class:`Dev` and
:class:`Ns` placeholders where the bytes carry an ifindex or a namespace
fd.  The recorder resolves those when the batch is sent -- the ifindex
against the links of the socket's own namespace, the fd by the namespace's
inode against the namespaces this process opened or created -- and prints
what the kernel refused as a comment, never as a command.
tests/unit/test_explain_render.py fails for a builder without a rendering;
tests/e2e/test_explain.py replays the printed commands with the real tools
in a fresh sandbox and compares the kernel state with nsnet's own.

Steps: the nearest caller outside the kernel and firewall layers names the
step (its function, e.g. ``_create_bridge``), unless a caller opened one
with :func:`step`; a new header is printed when the step changes.
Nothing here costs anything while no recorder is active: one global test
(and a closure per request, never called).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dev", "Ns", "Recorder", "active", "recording", "step"]

_ACTIVE: Recorder | None = None


@dataclass(frozen=True)
class Dev:
    """An ifindex in a command, printed as the link's name in the namespace
    the request is sent to."""

    index: int


@dataclass(frozen=True)
class Ns:
    """A namespace fd in a command (``netns NAME``)."""

    fd: int


def active() -> Recorder | None:
    return _ACTIVE


def ns_inode_here() -> int:
    """The inode of this thread's network namespace."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def remember_netns(fd: int, path: str) -> None:
    """A namespace handle was opened or created: its name, for rendering."""
    if _ACTIVE is not None:
        _ACTIVE.names[os.fstat(fd).st_ino] = path


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    global _ACTIVE
    previous, _ACTIVE = _ACTIVE, recorder
    try:
        yield recorder
    finally:
        _ACTIVE = previous


@contextmanager
def step(title: str, note: str = "") -> Iterator[None]:
    """Group what the block sends under ``title`` (and a ``# note``)."""
    rec = _ACTIVE
    if rec is None:
        yield
        return
    rec.steps.append((title, note))
    try:
        yield
    finally:
        rec.steps.pop()


# the functions whose frames never name a step: the layers that only carry
_CARRIERS = ("nsnet.kernel", "nsnet.firewall", "nsnet.state", "nsnet.dns", "contextlib")


def _caller_step() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_CARRIERS) and module.startswith("nsnet"):
            return frame.f_code.co_name.lstrip("_").replace("_", " ")
        frame = frame.f_back  # type: ignore[assignment]
    return "nsnet"


@dataclass
class Entry:
    step: str
    note: str
    lines: list[str]


@dataclass
class Recorder:
    """Collects what one command sends.  ``host`` is the inode of nsnet's
    host namespace (its commands carry no ``-n``); ``netns_dir`` is where
    named namespaces live (``ip -n NAME`` means NAME there)."""

    host: int
    netns_dir: str
    etc_netns_dir: str = "/etc/netns"
    entries: list[Entry] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # netns inode -> path
    steps: list[tuple[str, str]] = field(default_factory=list)

    # ------------------------------------------------------------- adding
    def add(self, lines: list[str]) -> None:
        if not lines:
            return
        title, note = self.steps[-1] if self.steps else (_caller_step(), "")
        last = self.entries[-1] if self.entries else None
        if last and (last.step, last.note) == (title, note):
            last.lines.extend(lines)
        else:
            self.entries.append(Entry(title, note, list(lines)))

    def netns_name(self, inode: int) -> str | None:
        """"" for the host, a name under netns_dir, a path, or None (a
        namespace this process did not open by name: a throwaway one)."""
        if inode == self.host:
            return ""
        path = self.names.get(inode)
        if path is None:
            return None
        if os.path.dirname(path) == self.netns_dir:
            return os.path.basename(path)
        return path

    def ip_prefix(self, inode: int) -> list[str] | None:
        name = self.netns_name(inode)
        if name is None:
            return None
        return ["-n", name] if name else []

    def in_netns(self, inode: int, argv: list[str]) -> list[str] | None:
        """``argv`` run in a namespace: ``ip netns exec NAME argv`` (plain
        in the host)."""
        name = self.netns_name(inode)
        if name is None:
            return None
        return ["ip", "netns", "exec", name, *argv] if name else argv

    # ---------------------------------------------------------- netlink
    def netlink(self, inode: int, requests: list[Any], links: dict[int, str],
                errors: list[tuple[int, str]]) -> None:
        """One batch sent on a socket of namespace ``inode``; ``links`` maps
        that namespace's ifindexes to names as they were before the batch."""
        prefix = self.ip_prefix(inode)
        if prefix is None:
            return  # a throwaway namespace (a feature probe, a drift check)
        lines = []
        for req, (err, detail) in zip(requests, errors, strict=False):
            cmd = render(req, prefix, links, self)
            if err:
                why = os.strerror(err) + (f": {detail}" if detail else "")
                lines.append(f"# refused by the kernel ({why}): {cmd}")
            else:
                lines.append(cmd)
        self.add(lines)

    def ns_created(self, path: str) -> None:
        name = os.path.basename(path) if os.path.dirname(path) == self.netns_dir else path
        lines = [f"ip netns add {shlex.quote(name)}"]
        if os.path.dirname(path) != self.netns_dir:
            lines.insert(0, f"# namespace made at {path}, outside the netns directory")
        self.add(lines)

    def ns_removed(self, path: str) -> None:
        if os.path.dirname(path) == self.netns_dir:
            self.add([f"ip netns del {shlex.quote(os.path.basename(path))}"])
        else:
            self.add([f"umount {shlex.quote(path)} && rm {shlex.quote(path)}"])

    def sysctls(self, inode: int, values: dict[str, str]) -> None:
        lines = []
        for key, value in values.items():
            argv = self.in_netns(inode, ["sysctl", "-w", sysctl_arg(key, value)])
            if argv is not None:
                lines.append(shlex.join(argv))
        self.add(lines)

    def nft(self, inode: int, batch: str) -> None:
        argv = self.in_netns(inode, ["nft", "-j", "-f", "-"])
        if argv is None:
            return
        self.add([f"{shlex.join(argv)} <<'EOF'", _pretty_nft(batch), "EOF"])

    def file(self, path: str, text: str | None) -> None:
        quoted = shlex.quote(path)
        if text is None:
            self.add([f"rm -f {quoted}",
                      f"rmdir {shlex.quote(os.path.dirname(path))} 2>/dev/null || true"])
        else:
            self.add([f"mkdir -p {shlex.quote(os.path.dirname(path))}",
                      f"cat > {quoted} <<'EOF'", text.rstrip("\n"), "EOF"])

    def comment(self, text: str) -> None:
        self.add([f"# {line}" for line in text.splitlines()])

    # ---------------------------------------------------------- output
    def render(self) -> str:
        out: list[str] = []
        for entry in self.entries:
            out.append(f"# --- {entry.step}")
            if entry.note:
                out += [f"#     {line}" for line in entry.note.splitlines()]
            out += entry.lines
        return "\n".join(out) + ("\n" if out else "")

    def commands(self) -> str:
        """The script alone (comments and headers dropped): what a replay runs."""
        return "\n".join(line for e in self.entries for line in e.lines
                         if not line.startswith("#")) + "\n"


def sysctl_arg(key: str, value: str) -> str:
    """``key=value`` for ``sysctl -w``: dotted, unless a component holds a
    dot (an interface name), then with slashes (sysctl accepts both)."""
    parts = key.split("/")
    name = ".".join(parts) if not any("." in p for p in parts) else key
    return f"{name}={value}"


def _pretty_nft(batch: str) -> str:
    """The JSON batch, one command per line (still the same document)."""
    import json

    doc = json.loads(batch)
    items = doc.get("nftables", [])
    body = ",\n".join("  " + json.dumps(item, separators=(",", ":")) for item in items)
    return '{"nftables": [\n' + body + "\n]}"


def render(req: Any, prefix: list[str], links: dict[int, str], rec: Recorder | None) -> str:
    """A request's command, placeholders resolved (see :class:`Dev`, :class:`Ns`)."""
    cmd = req.cmd()
    if not cmd:
        return f"# (no command rendering) {req.what}"
    words: list[str] = []
    comments: list[str] = []
    for word in cmd:
        if isinstance(word, Dev):
            words.append(links.get(word.index, f"if{word.index}"))
        elif isinstance(word, Ns):
            inode = os.fstat(word.fd).st_ino
            name = rec.netns_name(inode) if rec else None
            if name == "" and not prefix:
                words.pop()  # "netns": the request's own namespace is the host
            else:
                words.append(name or (rec.names.get(inode) if rec else None)
                             or f"/proc/self/fd/{word.fd}")
        elif isinstance(word, Note):
            comments.append(word.text)
        else:
            words.append(str(word))
    if words[0] in ("ip", "bridge", "tc"):  # all three take -n NAME
        words[1:1] = prefix
    text = shlex.join(words)
    return text + "".join(f"  # {c}" for c in comments)


@dataclass(frozen=True)
class Note:
    """A comment attached to a command: where it is only the closest
    equivalent of what nsnet sends, it says how."""

    text: str
