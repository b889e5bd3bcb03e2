"""The cluster store: a narrow key-value interface over etcd v3.

Overlay networks keep their cluster-wide state in etcd, an existing, proven
distributed store, never a home-made one.  nsnet needs only this of it:
get / get-prefix (with the store revision), put, delete (key or prefix),
transactions (compare-and-swap), leases (grant, keepalive, revoke) and
prefix watches from a revision.  :class:`Store` is that interface;
:class:`EtcdStore` speaks it to a real cluster, :class:`MemoryStore` is an
in-memory fake with the same semantics (revisions, leases, watches) for
unit tests.

Why etcd3gw (OpenStack's client of etcd's JSON gRPC gateway) and not the
others -- compared in November 2026:

* ``etcd3gw`` (2.x, released 2026, maintained by OpenStack, used by Nova,
  Cinder, Tooz; Debian 12 ships 2.0.0 as python3-etcd3gw): pure Python over
  ``requests``, no gRPC, no generated protobuf; speaks the gateway every
  etcd >= 3.3 serves on its client port (no extra process); TLS client certs
  through ``requests``.  It talks to one endpoint, so this module adds
  failover across the cluster's members.
* ``etcd3`` (python-etcd3 0.12.0, last release March 2020; Debian ships
  0.12): gRPC, but pinned to old ``grpcio``/``protobuf`` APIs (its generated
  code breaks with protobuf >= 4 without a workaround) and unmaintained.
* ``etcd3-py`` (last release 2019), ``aetcd`` (asyncio only: nsnet is
  synchronous), ``etcd-sdk-python`` (a young fork of python-etcd3, gRPC):
  older, async-only or pulling grpcio (a ~10 MB wheel, slow to import on
  every CLI start).

Gateway path: etcd 3.3 serves ``/v3beta/``, 3.4 serves ``/v3/`` and
(deprecated) ``/v3beta/`` -- checked on Debian 12's etcd-server 3.4.23:
/v3/ and /v3beta/ answer, /v3alpha/ is 404 (tests/e2e/test_overlay.py::
test_the_gateway_paths_of_etcd_3_4) -- and 3.5+ only ``/v3/``.  nsnet
needs etcd >= 3.4 and pins ``/v3/``, which also saves etcd3gw's ``GET
/version`` discovery round trip per client.

Errors: anything the store cannot do because it is unreachable, has no
leader or lost quorum becomes :class:`nsnet.errors.StoreUnavailable`, whose
message names the store (``etcd://H1:2379,...``); nothing here retries a
request on the same member forever.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import InvalidInput, NotFound, StateError, StoreUnavailable

# ------------------------------------------------------------------ data


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    lease: int = 0

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True)
class Compare:
    """One transaction guard: ``target`` of ``key`` ``op`` ``value``.
    target: "create" / "mod" (revisions), "version", "value"; op: = != < >."""

    key: str
    target: str
    op: str
    value: int | bytes


def absent(key: str) -> Compare:
    """The key does not exist (its create revision is 0)."""
    return Compare(key, "create", "=", 0)


def unchanged(kv: KV) -> Compare:
    """The key still has the revision it was read at."""
    return Compare(kv.key, "mod", "=", kv.mod_revision)


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True)
class Get:
    key: str


Op = Put | Delete | Get


@dataclass
class TxnResult:
    succeeded: bool
    revision: int
    gets: list[KV | None] = field(default_factory=list)  # one per Get op run


@dataclass(frozen=True)
class Event:
    kind: str  # "put" or "delete"
    kv: KV


@dataclass(frozen=True)
class MemberHealth:
    endpoint: str
    healthy: bool
    detail: str  # "leader", "follower", or why it is not healthy


class Watch(Protocol):
    def cancel(self) -> None: ...


# A watch calls ``on_events(events, revision)`` for each batch, in revision
# order; ``on_reset(revision)`` when it had to start over (history
# compacted): the caller re-reads the prefix.
OnEvents = Callable[[list[Event], int], None]


class Store(Protocol):
    """What nsnet asks of a cluster store."""

    name: str

    def get(self, key: str) -> KV | None: ...
    def get_prefix(self, prefix: str, keys_only: bool = False) -> tuple[list[KV], int]: ...
    def put(self, key: str, value: bytes, lease: int = 0) -> int: ...
    def delete(self, key: str, prefix: bool = False) -> int: ...
    def txn(self, compare: list[Compare], success: list[Op],
            failure: list[Op] | None = None) -> TxnResult: ...
    def lease_grant(self, ttl: int) -> int: ...
    def lease_keepalive(self, lease: int) -> int: ...
    def lease_revoke(self, lease: int) -> None: ...
    def watch_prefix(self, prefix: str, start_revision: int, on_events: OnEvents,
                     on_reset: Callable[[], None] | None = None) -> Watch: ...
    def health(self) -> list[MemberHealth]: ...
    def close(self) -> None: ...


def prefix_end(prefix: str) -> str:
    """The first key after every key starting with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


# ------------------------------------------------------------------ etcd


@dataclass(frozen=True)
class StoreConfig:
    """Where the store is and how to reach it (``etcd://H:P,H:P`` and TLS files)."""

    endpoints: tuple[str, ...]  # "host:port"
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout: float = 5.0
    netns: str | None = None  # connect from this namespace (the host's); None: ours

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    @property
    def tls(self) -> bool:
        return self.ca_cert is not None or self.cert is not None


def parse_store_url(url: str, ca_cert: str | None = None, cert: str | None = None,
                    key: str | None = None, timeout: float = 5.0,
                    netns: str | None = None) -> StoreConfig:
    """``etcd://H1:2379,H2:2379`` (port 2379 if omitted) -> StoreConfig."""
    if not url.startswith("etcd://"):
        raise InvalidInput(f"store {url!r}: expected etcd://HOST[:PORT][,HOST[:PORT]...]")
    endpoints = []
    for part in url[len("etcd://"):].rstrip("/").split(","):
        parsed = urlsplit("//" + part.strip())
        try:
            host, port = parsed.hostname, parsed.port or 2379
        except ValueError as exc:
            raise InvalidInput(f"store {url!r}: {exc}") from None
        if not host:
            raise InvalidInput(f"store {url!r}: empty host in {part!r}")
        endpoints.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if (cert is None) != (key is None):
        raise InvalidInput("store TLS: --cert and --key go together")
    return StoreConfig(tuple(endpoints), ca_cert, cert, key, timeout, netns)


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _kv(raw: dict[str, Any]) -> KV:
    return KV(_unb64(raw["key"]).decode(), _unb64(raw.get("value", "")),
              int(raw.get("create_revision", 0)), int(raw.get("mod_revision", 0)),
              int(raw.get("lease", 0)))


_TARGETS = {"create": ("CREATE", "create_revision"), "mod": ("MOD", "mod_revision"),
            "version": ("VERSION", "version"), "value": ("VALUE", "value")}
_OPS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def _compare_json(c: Compare) -> dict[str, Any]:
    target, field_name = _TARGETS[c.target]
    value = _b64(c.value) if c.target == "value" else c.value
    return {"key": _b64(c.key), "target": target, "result": _OPS[c.op], field_name: value}


def _op_json(op: Op) -> dict[str, Any]:
    if isinstance(op, Put):
        body: dict[str, Any] = {"key": _b64(op.key), "value": _b64(op.value)}
        if op.lease:
            body["lease"] = op.lease
        return {"request_put": body}
    if isinstance(op, Delete):
        body = {"key": _b64(op.key)}
        if op.prefix:
            body["range_end"] = _b64(prefix_end(op.key))
        return {"request_delete_range": body}
    return {"request_range": {"key": _b64(op.key)}}


class EtcdStore:
    """A :class:`Store` on an etcd >= 3.4 cluster through etcd3gw.

    Each request goes to the member that answered last; a member that is
    down, has no leader or times out is skipped for the next one, each
    member tried once per request.  No network I/O in the constructor.
    """

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.name = config.url
        self._clients: list[Any] = []
        self._current = 0
        self._lock = threading.Lock()

    # -- transport
    def _client(self, i: int) -> Any:
        if not self._clients:
            from etcd3gw.client import Etcd3Client  # imported on first use: CLI start-up

            from .transport import netns_session

            cfg = self.config
            cert = (cfg.cert, cfg.key) if cfg.cert and cfg.key else None
            session = netns_session(cfg.netns, cfg.ca_cert, cert)
            for ep in cfg.endpoints:
                host, _, port = ep.rpartition(":")
                self._clients.append(Etcd3Client(
                    host=host.strip("[]"), port=int(port),
                    protocol="https" if cfg.tls else "http", timeout=cfg.timeout,
                    api_path="/v3/", session=session))
        return self._clients[i]

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from etcd3gw import exceptions as gw

        errors = []
        n = len(self.config.endpoints)
        start = self._current
        for k in range(n):
            i = (start + k) % n
            client = self._client(i)
            try:
                out = client.post(client.get_url(path), json=body)
            except gw.ConnectionTimeoutError:  # no leader / lost quorum: it waits
                errors.append(f"{self.config.endpoints[i]}: no answer within "
                              f"{self.config.timeout:g}s")
                continue
            except (gw.ConnectionFailedError, gw.InternalServerError) as exc:  # next member
                errors.append(f"{self.config.endpoints[i]}: {_detail(exc)}")
                continue
            except gw.Etcd3Exception as exc:  # an answer (lease not found, bad request)
                detail = _detail(exc)
                cls = NotFound if "not found" in detail else StateError
                raise cls(f"cluster store {self.name}: {path}: {detail}") from None
            self._current = i
            return out
        raise StoreUnavailable(
            f"cluster store {self.name} unavailable (quorum lost or no member reachable): "
            + "; ".join(errors), store=self.name)

    # -- keys
    def get(self, key: str) -> KV | None:
        kvs = self._call("/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, keys_only: bool = False) -> tuple[list[KV], int]:
        """Every key under ``prefix`` and the store revision they were read
        at (to watch from); ``keys_only``: values left out (empty)."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        if keys_only:
            body["keys_only"] = True
        out = self._call("/kv/range", body)
        return [_kv(raw) for raw in out.get("kvs", [])], int(out["header"]["revision"])

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        return int(self._call("/kv/put", body)["header"]["revision"])

    def delete(self, key: str, prefix: bool = False) -> int:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        return int(self._call("/kv/deleterange", body).get("deleted", 0))

    def txn(self, compare: list[Compare], success: list[Op],
            failure: list[Op] | None = None) -> TxnResult:
        out = self._call("/kv/txn", {"compare": [_compare_json(c) for c in compare],
                                     "success": [_op_json(op) for op in success],
                                     "failure": [_op_json(op) for op in failure or []]})
        gets = []
        for resp in out.get("responses", []):
            if "response_range" in resp:
                kvs = resp["response_range"].get("kvs", [])
                gets.append(_kv(kvs[0]) if kvs else None)
        return TxnResult(bool(out.get("succeeded", False)), int(out["header"]["revision"]), gets)

    # -- leases
    def lease_grant(self, ttl: int) -> int:
        return int(self._call("/lease/grant", {"TTL": ttl})["ID"])

    def lease_keepalive(self, lease: int) -> int:
        """The lease's new TTL, or -1 if it has expired (is gone)."""
        result = self._call("/lease/keepalive", {"ID": lease}).get("result", {})
        return int(result.get("TTL", -1))

    def lease_revoke(self, lease: int) -> None:
        """Revoke (its keys go now); a lease already expired is no error."""
        with contextlib.suppress(NotFound):
            self._call("/kv/lease/revoke", {"ID": lease})

    # -- watch
    def watch_prefix(self, prefix: str, start_revision: int, on_events: OnEvents,
                     on_reset: Callable[[], None] | None = None) -> EtcdWatch:
        return EtcdWatch(self, prefix, start_revision, on_events, on_reset)

    # -- health
    def health(self) -> list[MemberHealth]:
        """Each configured endpoint: answering, and leader or follower."""
        from etcd3gw import exceptions as gw

        out = []
        for i, ep in enumerate(self.config.endpoints):
            client = self._client(i)
            try:
                status = client.post(client.get_url("/maintenance/status"), json={})
            except gw.Etcd3Exception as exc:
                out.append(MemberHealth(ep, False, _detail(exc)))
                continue
            member = status.get("header", {}).get("member_id")
            leader = status.get("leader")
            if not leader or leader == "0":
                out.append(MemberHealth(ep, False, "no leader"))
            else:
                out.append(MemberHealth(ep, True, "leader" if leader == member else "follower"))
        return out

    def close(self) -> None:
        if self._clients:
            self._clients[0].session.close()  # one session, shared by all members
        self._clients.clear()


def _detail(exc: Exception) -> str:
    """One short line: the gateway's error, or the socket error's text."""
    text = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
    errno_ = re.search(r"\[Errno (\d+)\]", text)
    if errno_:
        return os.strerror(int(errno_.group(1))).lower()
    with contextlib.suppress(ValueError, AttributeError):
        text = json.loads(text).get("error", text)
    return " ".join(str(text).split())[:200]


class EtcdWatch:
    """A prefix watch over the gateway's streaming ``/v3/watch``, in a
    daemon thread.  When the member it streams from goes away, it resumes
    from the next revision on another member; if that revision was
    compacted, it calls ``on_reset`` (the caller re-reads the prefix and
    watches again from there)."""

    RETRY_S = 0.2

    def __init__(self, store: EtcdStore, prefix: str, start_revision: int,
                 on_events: OnEvents, on_reset: Callable[[], None] | None) -> None:
        self.store, self.prefix = store, prefix
        self.next_revision = start_revision
        self.on_events, self.on_reset = on_events, on_reset
        self._stop = threading.Event()
        self._response: Any = None
        self.thread = threading.Thread(target=self._run, name=f"watch {prefix}", daemon=True)
        self.thread.start()

    def cancel(self) -> None:
        self._stop.set()
        resp = self._response
        if resp is not None:
            _close_stream(resp)
        self.thread.join(timeout=5)

    def _run(self) -> None:
        n = len(self.store.config.endpoints)
        i = self.store._current
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a member went away: try the next
                self._stream(self.store._client(i % n))
            i += 1
            self._stop.wait(self.RETRY_S)

    def _stream(self, client: Any) -> None:
        create = {"key": _b64(self.prefix), "range_end": _b64(prefix_end(self.prefix)),
                  "start_revision": self.next_revision}
        # "hasleader" (gRPC metadata through the gateway's Grpc-Metadata-
        # headers): a member cut off from the leader ends the stream with "no
        # leader" instead of silently delivering nothing; we then resume on
        # another member.
        resp = client.session.post(client.get_url("/watch"), json={"create_request": create},
                                   headers={"Grpc-Metadata-hasleader": "true"},
                                   stream=True, timeout=(self.store.config.timeout, None))
        self._response = resp
        if self._stop.is_set():
            return
        for line in resp.iter_lines(chunk_size=None):
            if self._stop.is_set():
                return
            if not line.strip():
                continue
            message = json.loads(line)
            if "error" in message:  # e.g. "no leader": resume elsewhere
                return
            result = message.get("result", {})
            if int(result.get("compact_revision", 0) or 0) > 0:
                self.next_revision = 0
                if self.on_reset:
                    self.on_reset()
                return
            if result.get("canceled"):  # e.g. the member lost its leader
                return
            events = [Event("delete" if ev.get("type") == "DELETE" else "put", _kv(ev["kv"]))
                      for ev in result.get("events", [])]
            if events:
                revision = max(ev.kv.mod_revision for ev in events)
                self.on_events(events, revision)
                self.next_revision = revision + 1


def _close_stream(resp: Any) -> None:
    with contextlib.suppress(Exception):  # unblock the reading thread now
        resp.raw._fp.fp.raw._sock.shutdown(2)
    with contextlib.suppress(Exception):
        resp.close()


# ------------------------------------------------------------------ fake


class MemoryStore:
    """An in-memory :class:`Store` for unit tests: one revision counter,
    leases that expire when the test says so (:meth:`expire`), watches
    called synchronously.  ``available = False`` makes every call fail as a
    store without quorum does."""

    def __init__(self, name: str = "memory://test") -> None:
        self.name = name
        self.revision = 1
        self.data: dict[str, KV] = {}
        self.leases: dict[int, int] = {}  # id -> ttl
        self.watches: list[_MemoryWatch] = []
        self.available = True
        self.calls = 0
        self._next_lease = 0x1000
        self._lock = threading.RLock()

    def _check(self) -> None:
        self.calls += 1
        if not self.available:
            raise StoreUnavailable(f"cluster store {self.name} unavailable (quorum lost)",
                                   store=self.name)

    def _keys(self, key: str, prefix: bool) -> list[str]:
        if not prefix:
            return [key] if key in self.data else []
        return sorted(k for k in self.data if k.startswith(key))

    def _emit(self, events: list[Event]) -> None:
        for w in list(self.watches):
            mine = [e for e in events if e.kv.key.startswith(w.prefix)]
            if mine and not w.cancelled:
                w.on_events(mine, self.revision)

    def _apply(self, ops: Iterable[Op], events: list[Event], gets: list[KV | None]) -> None:
        for op in ops:
            if isinstance(op, Get):
                gets.append(self.data.get(op.key))
            elif isinstance(op, Put):
                if op.lease and op.lease not in self.leases:
                    raise InvalidInput(f"{self.name}: lease {op.lease:x} not found")
                old = self.data.get(op.key)
                kv = KV(op.key, op.value, old.create_revision if old else self.revision,
                        self.revision, op.lease)
                self.data[op.key] = kv
                events.append(Event("put", kv))
            else:
                for k in self._keys(op.key, op.prefix):
                    old = self.data.pop(k)
                    events.append(Event("delete", KV(k, b"", 0, self.revision, old.lease)))

    def _write(self, ops: list[Op]) -> tuple[int, list[KV | None], int]:
        self.revision += 1
        events: list[Event] = []
        gets: list[KV | None] = []
        self._apply(ops, events, gets)
        if not events:
            self.revision -= 1
        self._emit(events)
        return self.revision, gets, len(events)

    def get(self, key: str) -> KV | None:
        with self._lock:
            self._check()
            return self.data.get(key)

    def get_prefix(self, prefix: str, keys_only: bool = False) -> tuple[list[KV], int]:
        with self._lock:
            self._check()
            kvs = [self.data[k] for k in self._keys(prefix, True)]
            if keys_only:
                kvs = [KV(kv.key, b"", kv.create_revision, kv.mod_revision, kv.lease)
                       for kv in kvs]
            return kvs, self.revision

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        with self._lock:
            self._check()
            return self._write([Put(key, value, lease)])[0]

    def delete(self, key: str, prefix: bool = False) -> int:
        with self._lock:
            self._check()
            return self._write([Delete(key, prefix)])[2]

    def _holds(self, c: Compare) -> bool:
        kv = self.data.get(c.key)
        actual: int | bytes
        if c.target == "create":
            actual = kv.create_revision if kv else 0
        elif c.target == "mod":
            actual = kv.mod_revision if kv else 0
        elif c.target == "version":
            actual = 1 if kv else 0
        else:
            actual = kv.value if kv else b""
        return {"=": actual == c.value, "!=": actual != c.value,
                "<": actual < c.value, ">": actual > c.value}[c.op]  # type: ignore[operator]

    def txn(self, compare: list[Compare], success: list[Op],
            failure: list[Op] | None = None) -> TxnResult:
        with self._lock:
            self._check()
            ok = all(self._holds(c) for c in compare)
            revision, gets, _ = self._write(success if ok else failure or [])
            return TxnResult(ok, revision, gets)

    def lease_grant(self, ttl: int) -> int:
        with self._lock:
            self._check()
            self._next_lease += 1
            self.leases[self._next_lease] = ttl
            return self._next_lease

    def lease_keepalive(self, lease: int) -> int:
        with self._lock:
            self._check()
            return self.leases.get(lease, -1)

    def lease_revoke(self, lease: int) -> None:
        with self._lock:
            self._check()
            self.expire(lease)

    def expire(self, lease: int) -> None:
        """The lease ran out: its keys go, as etcd deletes them."""
        with self._lock:
            self.leases.pop(lease, None)
            keys = [k for k, kv in self.data.items() if kv.lease == lease]
            if keys:
                self._write([Delete(k) for k in keys])

    def watch_prefix(self, prefix: str, start_revision: int, on_events: OnEvents,
                     on_reset: Callable[[], None] | None = None) -> _MemoryWatch:
        w = _MemoryWatch(self, prefix, on_events)
        with self._lock:
            self.watches.append(w)
        return w

    def health(self) -> list[MemberHealth]:
        return [MemberHealth(self.name, self.available,
                             "leader" if self.available else "no leader")]

    def close(self) -> None:
        pass


@dataclass
class _MemoryWatch:
    store: MemoryStore
    prefix: str
    on_events: OnEvents
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True
        if self in self.store.watches:
            self.store.watches.remove(self)


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
