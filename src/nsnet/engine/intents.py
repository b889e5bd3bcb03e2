"""The intent journal, typed.

Every change is recorded as an *intent* before the kernel is touched, and
removed in the same transaction that commits its result.  An intent left in
the journal means an nsnet process died part-way: the next one settles it,
rolling creations back and deletions (and DNS work after a commit) forward.

One immutable class per kind; one :class:`Registry` maps each class to the
function that settles it and says which way (back or forward).  Intents are
serialised by field *name* (:meth:`Record.to_dict`), never as positional
lists, and never edited once written: a narrower rollback is a new value
(:meth:`Record.replace`), not an edit of the recorded one.

Why not dataclasses: every nsnet command imports this module (a journal
left by a dead process is settled before anything else), and ten frozen
dataclasses cost ~10 ms to define -- each generates and compiles its
methods at import.  :class:`Record` gives the same behaviour (fields from
the class annotations, defaults, keyword or positional construction,
comparison and hashing by value, frozen, a readable repr) with methods
written once (#15's start-up regression; tests/unit/test_startup_imports.py).

Compatibility: journals written before the typed format held positional
lists (``"endpoints": [[id, host_ifname, netns]]`` in ``connect``/``ns_add``,
``"network": [id, bridge]`` in ``delete``).  A state directory may hold one
after a crash across an upgrade, so :func:`decode` reads both forms; new
entries are only ever written in the named form.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from ..state import Store

__all__ = ["ConnectIntent", "DeleteIntent", "DnsIntent", "EndpointRef", "Intent", "LinkIntent",
           "NetworkCreateIntent", "NetworkRef", "NsAddIntent", "PortsIntent", "Record",
           "Registry", "decode", "encode"]


class Record:
    """An immutable value whose fields are its class's annotations (in
    order, a base class's first; ``ClassVar`` ones are not fields); a class
    attribute of the same name is the field's default."""

    fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [name for name, kind in inspect.get_annotations(cls).items()
               if str(kind).rpartition(".")[2].split("[")[0] != "ClassVar"]
        cls.fields = (*cls.fields, *(n for n in own if n not in cls.fields))
        for name in own:  # as dataclasses: a shared mutable default is a bug
            if isinstance(cls.__dict__.get(name), (list, dict, set)):
                raise TypeError(f"{cls.__name__}.{name}: mutable default")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if len(args) > len(cls.fields):
            raise TypeError(f"{cls.__name__} takes at most {len(cls.fields)} arguments")
        values = dict(zip(cls.fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in cls.fields or name in values:
                raise TypeError(f"{cls.__name__}: unexpected or repeated argument {name!r}")
            values[name] = value
        for name in cls.fields:
            if name not in values:
                values[name] = _default(cls, name)
            object.__setattr__(self, name, values[name])

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.fields)

    def replace(self, **changes: Any) -> Self:
        """A new value with ``changes`` (as ``dataclasses.replace``)."""
        return type(self)(**{**dict(zip(self.fields, self.values(), strict=True)), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value, nested records as dicts (as ``dataclasses.asdict``)."""
        return {name: _plain(getattr(self, name)) for name in self.fields}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.values() == other.values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.fields)
        return f"{type(self).__name__}({inner})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


def _default(cls: type, name: str) -> Any:
    """The default of field ``name``: a plain value set in the class body of
    ``cls`` or a base (never a method of Record's that shares the name)."""
    for klass in cls.__mro__:
        if klass is Record:
            break
        value = klass.__dict__.get(name, _MISSING)
        if value is not _MISSING and not callable(value):
            return value
    raise TypeError(f"{cls.__name__}: missing argument {name!r}")


_MISSING = object()


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


class EndpointRef(Record):
    """What a rollback needs to find a half-made endpoint's host end."""

    id: str
    host_ifname: str
    netns: str


class NetworkRef(Record):
    id: str
    bridge: str
    driver: str = "bridge"  # whose teardown removes it (#17: "overlay")
    # its endpoints' host ends' link group, deleted in one request (0: none;
    # journals written before #15 have none either)
    link_group: int = 0


class Intent(Record):
    kind: ClassVar[str] = ""
    forward: ClassVar[bool] = False  # settled by finishing it (else: by undoing it)

    @property
    def what(self) -> str:
        return self.kind.replace("_", " ")


class ConnectIntent(Intent):
    """A connect (or handed-off connect): veths made, namespaces maybe created."""

    kind: ClassVar[str] = "connect"
    endpoints: tuple[EndpointRef, ...] = ()
    create_ns: tuple[str, ...] = ()
    # existing namespaces whose lo was pristine (down, no address) before the
    # connect brought it up: a rollback leaves them as it found them
    pristine_lo: tuple[str, ...] = ()
    # the network's link group, in which the host ends are born: before they
    # are marked, a rollback takes an unmarked veth of a planned name only if
    # it is in this group, never someone's (0: journals from before it, and
    # networks without a group: any unmarked veth of the name, as before)
    link_group: int = 0


class NsAddIntent(Intent):
    kind: ClassVar[str] = "ns_add"
    endpoints: tuple[EndpointRef, ...] = ()  # always empty; kept for the rollback's shape
    create_ns: tuple[str, ...] = ()


class NetworkCreateIntent(Intent):
    kind: ClassVar[str] = "network_create"
    id: str = ""
    bridge: str = ""
    # IPv4 forwarding was off in the host before this network turned it on:
    # a rollback turns it off again (a network that was never made changes
    # no host-wide setting)
    forwarding_was_off: bool = False
    # the same for IPv6 forwarding (net.ipv6.conf.all.forwarding), turned on
    # by the first IPv6 network that is not internal
    forwarding6_was_off: bool = False
    driver: str = "bridge"  # whose teardown undoes it (#17: "overlay")
    # the network's name: an overlay's rollback finds the cluster's network
    # by it (made in etcd before the local commit) and removes it if this
    # very create made it (#17)
    name: str = ""


class PortsIntent(Intent):
    """port add/rm: the firewall is rebuilt from the state if it did not commit."""

    kind: ClassVar[str] = "ports"


class DeleteIntent(Intent):
    """Endpoints, then namespaces, then a network: always rolled forward."""

    kind: ClassVar[str] = "delete"
    forward: ClassVar[bool] = True
    endpoints: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    network: NetworkRef | None = None


class LinkIntent(Intent):
    """A point-to-point link being made: its first end, found by name."""

    kind: ClassVar[str] = "link_add"
    node: str = ""
    ifname: str = ""


class DnsIntent(Intent):
    """The resolv.conf/DNS-server work following a commit: finished later."""

    kind: ClassVar[str] = "dns"
    forward: ClassVar[bool] = True
    namespaces: tuple[str, ...] = ()


KINDS: dict[str, type[Intent]] = {cls.kind: cls for cls in (
    ConnectIntent, NsAddIntent, NetworkCreateIntent, PortsIntent, DeleteIntent, DnsIntent,
    LinkIntent)}


def encode(intent: Intent) -> tuple[str, dict]:
    return intent.kind, intent.to_dict()


def _ref(item: list | dict) -> EndpointRef:
    return EndpointRef(*item) if isinstance(item, list) else EndpointRef(**item)


def decode(kind: str, payload: dict) -> Intent:
    """A recorded intent, in the named form or the older positional one."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown intent kind {kind!r}")
    if cls is ConnectIntent:
        return ConnectIntent(endpoints=tuple(_ref(e) for e in payload.get("endpoints", ())),
                             create_ns=tuple(payload.get("create_ns", ())),
                             pristine_lo=tuple(payload.get("pristine_lo", ())),
                             link_group=int(payload.get("link_group", 0)))
    if cls is NsAddIntent:
        return NsAddIntent(endpoints=tuple(_ref(e) for e in payload.get("endpoints", ())),
                           create_ns=tuple(payload.get("create_ns", ())))
    if cls is NetworkCreateIntent:
        return NetworkCreateIntent(payload["id"], payload["bridge"],
                                   bool(payload.get("forwarding_was_off", False)),
                                   bool(payload.get("forwarding6_was_off", False)),
                                   payload.get("driver", "bridge"), payload.get("name", ""))
    if cls is DeleteIntent:
        net = payload.get("network")
        ref = None if not net else (NetworkRef(*net) if isinstance(net, list)
                                    else NetworkRef(**net))
        return DeleteIntent(tuple(payload.get("endpoints", ())),
                            tuple(payload.get("namespaces", ())), ref)
    if cls is DnsIntent:
        return DnsIntent(tuple(payload.get("namespaces", ())))
    if cls is LinkIntent:
        return LinkIntent(payload["node"], payload["ifname"])
    return cls()


Settle = Callable[[int, Intent], None]


class Registry:
    """Intent class -> how to settle one the journal holds.

    A rollback gets the intent and the journal entry is removed after it; a
    roll-forward gets the entry's id too, as it removes the entry itself in
    the transaction that commits the finished work."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._undo: dict[type[Intent], Callable[[Intent], None]] = {}
        self._finish: dict[type[Intent], Settle] = {}

    def rollback(self, cls: type[Intent], undo: Callable) -> None:
        assert not cls.forward, cls
        self._undo[cls] = undo

    def roll_forward(self, cls: type[Intent], finish: Callable) -> None:
        assert cls.forward, cls
        self._finish[cls] = finish

    def add(self, intent: Intent) -> int:
        """Record ``intent`` (inside the caller's transaction)."""
        return self.store.journal_add(*encode(intent))

    def undo(self, intent: Intent) -> None:
        self._undo[type(intent)](intent)

    def pending(self) -> list[tuple[int, Intent]]:
        return [(op, decode(kind, payload)) for op, kind, payload in self.store.journal()]

    def settle(self, op: int, intent: Intent) -> None:
        if intent.forward:
            self._finish[type(intent)](op, intent)
            return
        self.undo(intent)
        with self.store.transaction():
            self.store.journal_remove(op)
