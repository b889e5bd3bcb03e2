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

import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import FrozenInstanceError
from typing import Any

__all__ = ["Dev", "Ns", "Recorder", "active", "recording", "step"]

_ACTIVE: Recorder | None = None


class _Word:
    """An immutable one-value word of a command, compared by value.  Plain
    classes rather than frozen dataclasses: every nsnet command imports this
    module, and each dataclass costs ~0.5-1 ms to define (#15)."""

    __slots__ = ()

    def __init__(self, value: Any) -> None:
        object.__setattr__(self, self.__slots__[0], value)

    def _value(self) -> Any:
        return getattr(self, self.__slots__[0])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._value() == other._value()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._value())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__slots__[0]}={self._value()!r})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")


class Dev(_Word):
    """An ifindex in a command, printed as the link's name in the namespace
    the request is sent to."""

    __slots__ = ("index",)
    index: int


class Ns(_Word):
    """A namespace fd in a command (``netns NAME``)."""

    __slots__ = ("fd",)
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


class Entry:
    def __init__(self, step: str, note: str, lines: list[str]) -> None:
        self.step, self.note, self.lines = step, note, lines


class Recorder:
    """Collects what one command sends.  ``host`` is the inode of nsnet's
    host namespace (its commands carry no ``-n``); ``netns_dir`` is where
    named namespaces live (``ip -n NAME`` means NAME there)."""

    def __init__(self, host: int, netns_dir: str, etc_netns_dir: str = "/etc/netns") -> None:
        self.host = host
        self.netns_dir = netns_dir
        self.etc_netns_dir = etc_netns_dir
        self.entries: list[Entry] = []
        self.names: dict[int, str] = {}  # netns inode -> path
        self.steps: list[tuple[str, str]] = []

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
        """One transaction: in nft's syntax (``nft -f``: one atomic batch, as
        nsnet's), or, if :func:`nft_text` cannot translate it, the JSON."""
        text = nft_text(batch)
        argv = self.in_netns(inode, ["nft", "-f", "-"] if text else ["nft", "-j", "-f", "-"])
        if argv is None:
            return
        self.add([f"{shlex.join(argv)} <<'EOF'", (text or _pretty_nft(batch)).rstrip("\n"),
                  "EOF"])

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
            if name == "" and not prefix and words and words[-1] == "netns":
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


class Note(_Word):
    """A comment attached to a command: where it is only the closest
    equivalent of what nsnet sends, it says how."""

    __slots__ = ("text",)
    text: str


# ------------------------------------------------------------ nft text
class _Unsupported(Exception):
    pass


_QUOTED_KEYS = {"iifname", "oifname"}  # their values are strings (names with '-', '.')


def nft_text(batch: str) -> str | None:
    """A JSON batch in nft's own syntax (``nft -f``), or None if it holds
    anything this small translator does not know (then the JSON is shown).
    tests/e2e/test_explain.py replays the text with ``nft -f`` and compares
    the ruleset with nsnet's, so a wrong translation fails a test."""
    try:
        return "\n".join(_nft_cmd(c) for c in json.loads(batch)["nftables"]
                         if "metainfo" not in c) + "\n"
    except (_Unsupported, KeyError, TypeError, ValueError, AttributeError):
        return None


def _nft_cmd(cmd: dict) -> str:
    (verb, obj), = cmd.items()
    (kind, body), = obj.items()
    if verb not in ("add", "delete", "flush") or not isinstance(body, dict):
        raise _Unsupported(verb)
    where = f"{body['family']} {body.get('table', body.get('name'))}"
    if kind == "table":
        return f"{verb} table {body['family']} {body['name']}"
    if kind == "chain":
        head = f"{verb} chain {where} {_q(body['name'])}"
        if verb == "add" and "hook" in body:
            head += (f" {{ type {body['type']} hook {body['hook']} priority {body['prio']}; "
                     f"policy {body['policy']}; }}")
        return head
    if kind in ("set", "map"):
        types = body["type"] if isinstance(body["type"], list) else [body["type"]]
        spec = " . ".join(types)
        if kind == "map":
            spec += f" : {body['map']}"
        extra = "".join(f" {k} {v};" for k, v in body.items() if k in ("flags",))
        return f"{verb} {kind} {where} {body['name']} {{ type {spec};{extra} }}"
    if kind == "element":
        items = ", ".join(_nft_elem(e) for e in body["elem"])
        return f"{verb} element {where} {body['name']} {{ {items} }}"
    if kind == "rule" and verb == "add":
        words = [_nft_stmt(s) for s in body["expr"]]
        if "comment" in body:
            words.append(f"comment {json.dumps(body['comment'])}")
        return f"add rule {where} {_q(body['chain'])} " + " ".join(words)
    raise _Unsupported(kind)


def _q(name: str) -> str:
    """A table/chain name as nft's scanner takes it unquoted (letters, then
    letters, digits, - _ . /); anything else is not translated."""
    import re

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9/\\_.-]*", name):
        raise _Unsupported(name)
    return name


def _nft_elem(elem: object) -> str:
    data = None
    if isinstance(elem, list):  # a map element: [key, data]
        elem, data = elem
    comment = ""
    if isinstance(elem, dict) and "elem" in elem:
        if set(elem["elem"]) - {"val", "comment"}:
            raise _Unsupported("element options")
        comment = f" comment {json.dumps(elem['elem']['comment'])}" \
            if "comment" in elem["elem"] else ""
        elem = elem["elem"]["val"]
    if isinstance(elem, dict) and set(elem) == {"concat"}:
        elem = elem["concat"]
    text = _nft_value(elem, quoted=isinstance(elem, str) and not _is_addr(elem)) + comment
    if data is not None:
        text += " : " + (_nft_stmt(data) if isinstance(data, dict) else _nft_value(data))
    return text


def _is_addr(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _nft_value(value: object, quoted: bool = False) -> str:
    if isinstance(value, bool) or value is None:
        raise _Unsupported("value")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value) if quoted and not value.startswith("@") else value
    if isinstance(value, list):  # concatenated element key
        return " . ".join(_nft_value(v, quoted=isinstance(v, str) and not _is_addr(v)
                                     and not v.isalpha()) for v in value)
    raise _Unsupported(repr(value))


def _nft_expr(expr: object, quote: bool = False) -> str:
    if not isinstance(expr, dict):
        if isinstance(expr, list):
            return "{ " + ", ".join(_nft_expr(e, quote) for e in expr) + " }"
        return _nft_value(expr, quote)
    (kind, body), = expr.items()
    if kind == "payload":
        return f"{body['protocol']} {body['field']}"
    if kind == "meta":
        return f"meta {body['key']}"
    if kind == "ct":
        return f"ct {body['key']}"
    if kind == "fib":
        return f"fib {' . '.join(body['flags'])} {body['result']}"
    if kind == "prefix":
        return f"{body['addr']}/{body['len']}"
    if kind == "set":
        return _nft_expr(body, quote)
    if kind == "concat":
        return " . ".join(_nft_expr(e) for e in body)
    if kind == "map":
        return f"{_nft_expr(body['key'])} map {_nft_expr(body['data'])}"
    if kind == "numgen" and set(body) == {"mode", "mod", "offset"} and not body["offset"]:
        return f"numgen {body['mode']} mod {body['mod']}"
    if kind == "|":
        return " | ".join(_nft_expr(e) for e in body)
    raise _Unsupported(kind)


def _nft_stmt(stmt: dict) -> str:
    (kind, body), = stmt.items()
    if kind == "match":
        left = body["left"]
        quote = isinstance(left, dict) and left.get("meta", {}).get("key") in _QUOTED_KEYS
        op = {"==": "", "in": ""}.get(body["op"], body["op"] + " ")
        if body["op"] not in ("==", "in", "!=", "<", ">", "<=", ">="):
            raise _Unsupported(body["op"])
        right = body["right"]
        if body["op"] == "in" and isinstance(right, list):  # flags: a bitmask, not a set
            return f"{_nft_expr(left)} " + ",".join(_nft_value(v) for v in right)
        return f"{_nft_expr(left)} {op}{_nft_expr(right, quote)}"
    if kind in ("accept", "drop", "return", "masquerade") and body is None:
        return kind
    if kind in ("jump", "goto"):
        return f"{kind} {_q(body['target'])}"
    if kind == "vmap":
        return f"{_nft_expr(body['key'])} vmap {_nft_expr(body['data'])}"
    if kind == "dnat" and set(body) <= {"addr", "port"}:
        text = f"dnat to {_nft_expr(body['addr'])}"
        return text + (f" : {_nft_expr(body['port'])}" if "port" in body else "")
    if kind == "mangle":
        return f"{_nft_expr(body['key'])} set {_nft_expr(body['value'])}"
    raise _Unsupported(kind)
