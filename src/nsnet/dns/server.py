"""The embedded DNS server: one asyncio process per host namespace.

It serves every nsnet network that has DNS on and at least one endpoint, on
that network's gateway address, port 53, UDP and TCP -- nowhere else.  It
reads names from the state store and notices changes by SQLite's
``PRAGMA data_version`` (checked on every batch of queries and every tick)
or at once on SIGHUP, so connect/disconnect/aliases show up without a
restart and without dropping queries.

Per network: A records for each endpoint's namespace name and aliases, PTR
for its address; NXDOMAIN for unknown single-label names (nsnet's zone);
on a network with IPv6 (#16) also AAAA records and PTR under ip6.arpa, the
server listening on the IPv6 gateway too (same zone, one socket pair per
gateway address);
other names are forwarded to the network's upstreams (``--dns``) or the
host namespace's resolv.conf, with a deadline, so a dead upstream gives
SERVFAIL in about 1.5 s -- except on an ``--internal`` network, whose
queries never leave: other names get SERVFAIL at once, as Docker's embedded
DNS answers them since CVE-2024-29018.  Queries from outside the network's
subnet are refused; names that cannot be (a label over 63 bytes, a name over
255) get FORMERR.

Bounded against exhaustion: TCP connections per client and in total, an idle
and a write deadline per connection (a client that never reads is cut off,
never waited for), and the number of forwarded queries in flight.

Speed: answers from nsnet's zone are cached as wire bytes keyed by the
query (minus its ID); a hit costs a dict lookup and two slices, and each
socket wakeup drains every pending datagram.  dnslib only parses misses.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import signal
import socket
import sqlite3
import struct
import sys
import time
from dataclasses import dataclass, field

from dnslib import AAAA, EDNS0, OPCODE, PTR, QTYPE, RCODE, RR, A, DNSError, DNSRecord

log = logging.getLogger("nsnet.dns")

TTL = 5
UPSTREAM_TRY = 0.7  # seconds per upstream server
UPSTREAM_DEADLINE = 1.5  # then SERVFAIL
TICK = 0.5
LINGER = 2.0  # seconds with nothing to serve before exiting: a runtime that
#               deletes a container and adds the next one reuses the server
MAX_CACHE = 200_000
MAX_FORWARDS = 256  # forwarded queries in flight; beyond, REFUSED (Docker: 1024)
TCP_PER_CLIENT = 8  # connections one client address may hold open
TCP_TOTAL = 128  # connections open at once, all clients together
TCP_IDLE = 5.0  # seconds a connection may take to send its next query, whole
TCP_WRITE = 5.0  # seconds an answer may wait for the client to read it
TCP_BUFFER = 16384  # bytes of reads buffered per connection; the kernel's send buffer
#                     is set to this too (doubled by Linux), answers are never queued
#                     beyond it: a client that does not read stops being read
TCP_BACKLOG = 32  # also how many connections one wakeup accepts before the limits apply
UDP_BUFFER = 1 << 20  # bytes of queries the kernel holds for a busy server: the
# default (~208 kB, ~200 small queries by their truesize) dropped 50 of a
# 400-query burst when the cores were saturated; 1 MiB holds ~1000
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; Python's socket module lacks it
MAX_LABEL, MAX_NAME = 63, 255  # RFC 1035 2.3.4
STATUS, PIDFILE = "dns.status.json", "dns.pid"


@dataclass
class Zone:
    """What one network's resolver knows.  ``gateway`` is the address it is
    known by (the IPv4 one; an IPv6-only network's IPv6 one); ``names``
    holds addresses of both families, the answer's type picks them."""

    network: str
    gateway: str
    subnet: ipaddress.IPv4Network | None
    upstreams: list[str]
    internal: bool = False  # its queries never leave: no forwarding
    names: dict[str, list[str]] = field(default_factory=dict)
    ptr: dict[str, str] = field(default_factory=dict)
    cache: dict[bytes, bytes] = field(default_factory=dict)
    gateway6: str = ""
    subnet6: ipaddress.IPv6Network | None = None

    def __post_init__(self) -> None:
        self._net = int(self.subnet.network_address) if self.subnet else -1
        self._mask = int(self.subnet.netmask) if self.subnet else 0
        self._net6 = int(self.subnet6.network_address) if self.subnet6 else -1
        self._mask6 = int(self.subnet6.netmask) if self.subnet6 else 0

    @property
    def gateways(self) -> tuple[str, ...]:
        """Every address the zone is served on."""
        return tuple(g for g in (self.gateway, self.gateway6) if g)

    def allows(self, client_ip: str) -> bool:
        if ":" in client_ip:
            try:
                packed = socket.inet_pton(socket.AF_INET6, client_ip.split("%")[0])
            except OSError:
                return False
            return int.from_bytes(packed, "big") & self._mask6 == self._net6
        try:
            packed = socket.inet_aton(client_ip)
        except OSError:
            return False
        return struct.unpack("!I", packed)[0] & self._mask == self._net


RESOLV_MARK = "# nsnet: embedded DNS of network"  # (nsnet.dns.RESOLV_MARK)


def host_upstreams(paths: list[str] | tuple[str, ...] = ("/etc/resolv.conf",)) -> list[str]:
    """The nameservers of the first of ``paths`` that exists and is not one
    nsnet wrote for an endpoint (the host namespace's resolv.conf, as ``ip
    netns exec`` would show it).  IPv4 ones first, in file order, then the
    IPv6 ones: forwarding goes over either family (#16), and putting IPv6
    after keeps what worked before IPv6 was supported the first choice."""
    for path in paths:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if text.startswith(RESOLV_MARK):
            continue
        out: dict[int, list[str]] = {4: [], 6: []}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    out[ipaddress.ip_address(parts[1]).version].append(parts[1])
        return out[4] + out[6]
    return []


def load_zones(db: sqlite3.Connection, default_upstreams: list[str],
               known: dict[str, tuple[tuple, Zone]] | None = None) -> dict[str, Zone]:
    """Zones by gateway address, for networks with DNS on and endpoints; a
    dual-stack network's zone under both of its gateways.

    ``known`` (network id -> (what the zone was built from, zone)), kept by
    the caller across reloads, lets a reload re-read only the networks whose
    endpoints changed (``zone_versions``, kept by the store's triggers) or
    whose own settings did: O(changed networks), not O(all endpoints)."""
    zones: dict[str, Zone] = {}
    nets = db.execute("SELECT id, name, subnet, gateway, dns_servers, internal, subnet6, "
                      "gateway6 FROM networks WHERE dns=1").fetchall()
    try:
        versions = dict(db.execute("SELECT network_id, version FROM zone_versions"))
    except sqlite3.Error:  # a store made before the table: read everything
        versions, known = {}, None
    gateways = {gw for net in nets for gw in (net[3], net[7]) if gw}
    fresh: dict[str, tuple[tuple, Zone]] = {}
    for net_id, name, subnet, gateway, servers, internal, subnet6, gateway6 in nets:
        ups = servers.split(",") if servers else [u for u in default_upstreams
                                                  if u not in gateways]
        key = (name, subnet, gateway, tuple(ups), internal, subnet6, gateway6,
               versions.get(net_id))
        if known is not None and net_id in known and known[net_id][0] == key:
            fresh[net_id] = known[net_id]
            for gw in known[net_id][1].gateways:
                zones[gw] = known[net_id][1]
            continue
        rows = db.execute("SELECT netns, address, aliases, address6 FROM endpoints WHERE "
                          "network_id=? ORDER BY created, netns", (net_id,)).fetchall()
        if not rows:
            continue
        v4 = ipaddress.IPv4Network(subnet) if subnet else None
        v6 = ipaddress.IPv6Network(subnet6) if subnet6 else None
        zone = Zone(name, gateway if v4 else gateway6, v4, ups, bool(internal),
                    gateway6=gateway6 if v4 and v6 else "", subnet6=v6)
        for netns, address, aliases, address6 in rows:
            ips = [a.split("/")[0] for a in (address, address6) if a]
            for n in [netns.lower(), *(aliases.split(",") if aliases else [])]:
                zone.names.setdefault(n, []).extend(ips)
            for ip in ips:
                zone.ptr[ip] = netns
        try:  # an overlay's endpoints on other hosts (#17), kept by the overlay agent
            remote = db.execute("SELECT name, address FROM remote_names WHERE network_id=? "
                                "ORDER BY name", (net_id,)).fetchall()
        except sqlite3.Error:  # a store made before the table
            remote = []
        for n, address in remote:
            zone.names.setdefault(n.lower(), []).append(address)
            zone.ptr.setdefault(address, n)
        for gw in zone.gateways:
            zones[gw] = zone
        if versions.get(net_id) is not None:
            fresh[net_id] = (key, zone)
    if known is not None:
        known.clear()
        known.update(fresh)
    return zones


# ------------------------------------------------------------ answering
def _reply(query: DNSRecord, rcode: int = RCODE.NOERROR, auth: bool = False) -> DNSRecord:
    reply = query.reply(ra=1, aa=int(auth))
    reply.header.rcode = rcode
    return reply


def _grow_receive_buffer(sock: socket.socket) -> None:
    """UDP_BUFFER of receive queue: beyond net.core.rmem_max as root
    (SO_RCVBUFFORCE), else as much as rmem_max allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, UDP_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)


def _udp_limit(query: DNSRecord) -> int:
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(512, min(int(rr.rclass), 4096))
    return 512


def _finish(query: DNSRecord, reply: DNSRecord, limit: int | None) -> bytes:
    if any(rr.rtype == QTYPE.OPT for rr in query.ar):
        reply.add_ar(EDNS0(udp_len=4096))
    wire = reply.pack()
    if limit is not None and len(wire) > limit:
        reply.rr = []
        reply.header.tc = 1
        wire = reply.pack()
    return wire


def error_for(data: bytes, rcode: int) -> bytes | None:
    """A bare error answer when the query cannot be parsed (None: drop it)."""
    if len(data) < 12:
        return None
    flags = (struct.unpack_from("!H", data, 2)[0] & 0x7900) | 0x8080 | rcode  # QR, RA
    return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


class Answer:
    """What to do with one query: reply now (``wire``) or forward it."""

    __slots__ = ("cache_key", "forward", "wire")

    def __init__(self, wire: bytes | None = None, forward: bool = False,
                 cache_key: bytes | None = None) -> None:
        self.wire, self.forward, self.cache_key = wire, forward, cache_key


_PLAIN_QUERY = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD 1, AN 0, NS 0, AR 0
_A_HEAD = b"\xc0\x0c\x00\x01\x00\x01" + struct.pack("!IH", TTL, 4)  # -> the question's name
_AAAA_HEAD = b"\xc0\x0c\x00\x1c\x00\x01" + struct.pack("!IH", TTL, 16)


def _records(ips: list[str], qtype: int) -> list[bytes]:
    """The answer records for ``qtype`` (A, AAAA or ANY), in the zone's
    order: each address as its family's record."""
    out = []
    for ip in ips:
        if ":" in ip:
            if qtype in (28, 255):
                out.append(_AAAA_HEAD + socket.inet_pton(socket.AF_INET6, ip))
        elif qtype in (1, 255):
            out.append(_A_HEAD + socket.inet_aton(ip))
    return out


def fast_answer(zone: Zone, data: bytes) -> bytes | None:
    """The answer to the commonest query -- standard, one question, class
    IN, no EDNS, a name of the zone -- built from the query's bytes without
    dnslib, byte for byte what the full path builds (QR AA, RD echoed / RA,
    Z AD CD echoed); None for anything else (the full path answers it)."""
    end = len(data)
    if end < 17 or data[2] & 0xF8 or data[4:12] != _PLAIN_QUERY:
        return None  # a response, another opcode, or more than one plain question
    pos, labels = 12, []
    while True:
        size = data[pos]
        if size == 0:
            break
        label = data[pos + 1:pos + 1 + size]
        if size > MAX_LABEL or len(label) < size or b"." in label:
            return None
        labels.append(label)
        pos += 1 + size
        if pos >= end:
            return None
    if pos + 5 != end or data[pos + 3:pos + 5] != b"\x00\x01":
        return None  # truncated, trailing bytes, or not class IN
    try:
        ips = zone.names.get(b".".join(labels).decode("ascii").lower())
    except UnicodeDecodeError:
        return None
    if ips is None:
        return None
    qtype = data[pos + 1] << 8 | data[pos + 2]
    records = _records(ips, qtype)
    wire = b"".join((data[:2], bytes((0x84 | data[2] & 0x01, 0x80 | data[3] & 0x70)),
                     struct.pack("!HHHH", 1, len(records), 0, 0), data[12:], *records))
    return wire if len(wire) <= 512 else None  # (the full path truncates)


def answer(zone: Zone, data: bytes, client_ip: str, udp: bool) -> Answer:
    """Answer a query from nsnet's zone, or say it must be forwarded."""
    if zone.allows(client_ip):
        wire = fast_answer(zone, data)
        if wire is not None:
            return Answer(wire, cache_key=data[2:])
    try:
        query = DNSRecord.parse(data)
    except (DNSError, struct.error, ValueError, IndexError, UnicodeDecodeError):
        return Answer(error_for(data, RCODE.FORMERR))
    limit = _udp_limit(query) if udp else None
    if not zone.allows(client_ip):
        return Answer(_finish(query, _reply(query, RCODE.REFUSED), limit))
    if query.header.opcode != OPCODE.QUERY or query.header.qr:
        return Answer(_finish(query, _reply(query, RCODE.NOTIMP), limit))
    if len(query.questions) != 1 or not _valid_name(query.q.qname.label):
        return Answer(error_for(data, RCODE.FORMERR))  # (it cannot be echoed back)
    q = query.questions[0]
    name = _zone_name(q.qname.label)
    if name is None:  # not a host name: never one of ours
        reply = None if len(q.qname.label) > 1 else _reply(query, RCODE.NXDOMAIN, auth=True)
    else:
        reply = _local(zone, query, name, q.qtype)
    if reply is None and zone.internal:  # an internal network's queries never leave
        return Answer(_finish(query, _reply(query, RCODE.SERVFAIL), limit))  # (not cached)
    if reply is None:
        return Answer(forward=True)
    return Answer(_finish(query, reply, limit), cache_key=data[2:])


def _valid_name(labels: tuple[bytes, ...]) -> bool:
    """RFC 1035's limits, which dnslib's parser does not check (and its
    packer then refuses: no answer at all)."""
    return (all(len(label) <= MAX_LABEL for label in labels)
            and sum(len(label) + 1 for label in labels) + 1 <= MAX_NAME)


def _zone_name(labels: tuple[bytes, ...]) -> str | None:
    """The name, lower-case, as nsnet's zone spells names; None when a label
    holds a dot or a byte no host name has."""
    try:
        text = [label.decode("ascii").lower() for label in labels]
    except UnicodeDecodeError:
        return None
    if any("." in t or not t.isprintable() for t in text):
        return None
    return ".".join(text)


def _local(zone: Zone, query: DNSRecord, name: str, qtype: int) -> DNSRecord | None:
    if name.endswith(".in-addr.arpa") or name.endswith(".ip6.arpa"):
        return _reverse(zone, query, name, qtype)
    ips = zone.names.get(name)
    if ips is not None:
        reply = _reply(query, auth=True)
        for ip in ips:
            if ":" in ip and qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(query.q.qname, QTYPE.AAAA, rdata=AAAA(ip), ttl=TTL))
            elif ":" not in ip and qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
        return reply  # other types: the name exists, no data (NODATA)
    if "." not in name:
        return _reply(query, RCODE.NXDOMAIN, auth=True)
    return None


def _reverse_ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a full in-addr.arpa / ip6.arpa name stands for (a
    shorter name, e.g. a whole zone's, is no address: forwarded)."""
    try:
        if name.endswith(".in-addr.arpa"):
            return ipaddress.IPv4Address(".".join(reversed(name[:-13].split("."))))
        nibbles = name[:-9].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        return ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None


def _reverse(zone: Zone, query: DNSRecord, name: str, qtype: int) -> DNSRecord | None:
    ip = _reverse_ip(name)
    if ip is None:
        return None
    if str(ip) in zone.ptr:
        reply = _reply(query, auth=True)
        if qtype in (QTYPE.PTR, QTYPE.ANY):
            reply.add_answer(RR(query.q.qname, QTYPE.PTR, rdata=PTR(zone.ptr[str(ip)] + "."),
                                ttl=TTL))
        return reply
    subnet = zone.subnet if ip.version == 4 else zone.subnet6
    if subnet is not None and ip in subnet:
        return _reply(query, RCODE.NXDOMAIN, auth=True)
    return None


# ----------------------------------------------------------- forwarding
class _OneReply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _ask_udp(server: str, data: bytes, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_OneReply, remote_addr=(server, 53))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(proto.done, timeout)
    finally:
        transport.close()


async def _ask_tcp(server: str, data: bytes, timeout: float) -> bytes:
    async def go() -> bytes:
        reader, writer = await asyncio.open_connection(server, 53)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            return await reader.readexactly(size)
        finally:
            writer.close()
    return await asyncio.wait_for(go(), timeout)


async def forward(zone: Zone, data: bytes, udp: bool) -> bytes | None:
    """Ask the upstreams in turn until one answers or the deadline passes.
    UDP first, as resolvers do; a truncated answer is asked again over TCP
    when the client came over TCP (a UDP client gets it truncated, and retries)."""
    deadline = time.monotonic() + UPSTREAM_DEADLINE
    for server in zone.upstreams:
        for ask in (_ask_udp, _ask_tcp):
            left = deadline - time.monotonic()
            if left <= 0:
                return error_for(data, RCODE.SERVFAIL)
            try:
                reply = await ask(server, data, min(UPSTREAM_TRY, left))
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                break  # next server
            if len(reply) < 12 or reply[:2] != data[:2]:
                break
            truncated = bool(reply[2] & 0x02)
            if not truncated or udp or ask is _ask_tcp:
                return reply
    return error_for(data, RCODE.SERVFAIL)


# --------------------------------------------------------------- server
class Server:
    def __init__(self, state_dir: str, resolv_paths: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.resolv_paths = resolv_paths or ["/etc/resolv.conf"]
        self.db_path = os.path.join(state_dir, "state.db")
        self.db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        self.version = -1
        self.generation = 0
        self.default_upstreams = host_upstreams(self.resolv_paths)
        self.zones: dict[str, Zone] = {}
        self.known: dict[str, tuple[tuple, Zone]] = {}  # see load_zones
        self.udp: dict[str, socket.socket] = {}
        self.tcp: dict[str, asyncio.base_events.Server] = {}
        self.errors: dict[str, str] = {}
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.forwarding = 0  # forwarded queries in flight
        self.tcp_open: dict[str, int] = {}  # TCP connections by client address

    # state -----------------------------------------------------------
    def changed(self) -> bool:
        try:
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return False
        return version != self.version

    def _refresh(self) -> list[str]:
        """Re-read the names (synchronously: the very next query sees them);
        returns the gateways that still need sockets."""
        self.version = self.db.execute("PRAGMA data_version").fetchone()[0]
        self.db.execute("BEGIN")  # one read snapshot: versions and endpoints agree
        try:
            self.zones = load_zones(self.db, self.default_upstreams, self.known)
        finally:
            self.db.execute("COMMIT")
        for gw in list(self.udp):
            if gw not in self.zones:
                self._close(gw)
        return [gw for gw in self.zones if gw not in self.udp]

    async def reload(self) -> None:
        await self._listen_all(self._refresh())

    async def _listen_all(self, gateways: list[str]) -> None:
        for gw in gateways:
            zone = self.zones.get(gw)
            if zone is not None and gw not in self.udp:
                await self._listen(gw, zone)
        self.errors = {z.network: self.errors[z.network] for z in self.zones.values()
                       if z.network in self.errors
                       and any(g not in self.udp for g in z.gateways)}
        self.generation += 1
        self._write_status()

    async def _listen(self, gw: str, zone: Zone) -> None:
        family = socket.AF_INET6 if ":" in gw else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _grow_receive_buffer(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((gw, 53))
            tcp = await asyncio.start_server(lambda r, w, gw=gw: self._tcp_client(gw, r, w),
                                             host=gw, port=53, reuse_address=True,
                                             limit=TCP_BUFFER, backlog=TCP_BACKLOG)
        except OSError as exc:
            sock.close()
            self.errors[zone.network] = f"cannot listen on {gw}:53: {exc.strerror}"
            log.error("network %s: %s", zone.network, self.errors[zone.network])
            return
        self.udp[gw] = sock
        self.tcp[gw] = tcp
        asyncio.get_running_loop().add_reader(sock.fileno(), self._udp_ready, gw)
        log.info("serving network %s on %s:53", zone.network, gw)

    def _close(self, gw: str) -> None:
        sock = self.udp.pop(gw)
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        self.tcp.pop(gw).close()

    def _write_status(self) -> None:
        zones = {z.network: z for z in self.zones.values()}
        status = {"pid": os.getpid(), "generation": self.generation,
                  "networks": {z.network: {"gateway": z.gateway, "gateways": list(z.gateways),
                                           "listening": all(g in self.udp for g in z.gateways),
                                           "error": self.errors.get(z.network)}
                               for z in zones.values()}}
        tmp = os.path.join(self.state_dir, STATUS + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # never write through a symlink planted under that name
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                               | os.O_CLOEXEC, 0o600), "w") as f:
            json.dump(status, f)
        os.replace(tmp, os.path.join(self.state_dir, STATUS))

    # queries ---------------------------------------------------------
    def _udp_ready(self, gw: str) -> None:
        sock = self.udp.get(gw)
        if sock is None:
            return
        if self.changed():
            self._spawn(self._listen_all(self._refresh()))
        zone = self.zones.get(gw)
        for _ in range(256):  # drain, but let other sockets have a turn
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if zone is None:
                return
            self._udp_query(sock, zone, data, addr)

    def _udp_query(self, sock: socket.socket, zone: Zone, data: bytes, addr: tuple) -> None:
        try:
            hit = zone.cache.get(data[2:]) if zone.allows(addr[0]) else None
            if hit is not None:
                sock.sendto(data[:2] + hit, addr)
                return
            ans = answer(zone, data, addr[0], udp=True)
            if ans.forward and self.forwarding >= MAX_FORWARDS:
                reply = error_for(data, RCODE.REFUSED)  # as Docker's resolver does
                if reply is not None:
                    sock.sendto(reply, addr)
            elif ans.forward:
                self.forwarding += 1
                self._spawn(self._udp_forward(sock, zone, data, addr))
            elif ans.wire is not None:
                self._remember(zone, ans)
                sock.sendto(ans.wire, addr)
        except Exception:  # a query never takes the server down
            log.exception("query from %s", addr)

    async def _udp_forward(self, sock: socket.socket, zone: Zone, data: bytes,
                           addr: tuple) -> None:
        try:
            reply = await forward(zone, data, udp=True)
        finally:
            self.forwarding -= 1
        if reply is not None:
            with contextlib.suppress(OSError):
                sock.sendto(reply, addr)

    @staticmethod
    def _remember(zone: Zone, ans: Answer) -> None:
        if ans.cache_key is not None and ans.wire is not None:
            if len(zone.cache) >= MAX_CACHE:
                zone.cache.clear()
            zone.cache[ans.cache_key] = ans.wire[2:]

    async def _tcp_client(self, gw: str, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """One TCP connection: queries in turn, each within TCP_IDLE, each
        answer read by the client within TCP_WRITE.  Over the limits the
        connection is dropped at once.  It always ends with ``abort()``:
        ``close()`` would keep the socket until a client that never reads
        had read everything."""
        peer = writer.get_extra_info("peername") or ("", 0)
        client = peer[0]
        if (sum(self.tcp_open.values()) >= TCP_TOTAL
                or self.tcp_open.get(client, 0) >= TCP_PER_CLIENT):
            writer.transport.abort()
            return
        self.tcp_open[client] = self.tcp_open.get(client, 0) + 1
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TCP_BUFFER)
            writer.transport.set_write_buffer_limits(high=0)  # drain() waits for the kernel
            await self._tcp_queries(gw, client, reader, writer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:
            log.exception("TCP client %s", peer)
        finally:
            self.tcp_open[client] -= 1
            if not self.tcp_open[client]:
                del self.tcp_open[client]
            writer.transport.abort()

    async def _tcp_queries(self, gw: str, client: str, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        while True:
            async with asyncio.timeout(TCP_IDLE):  # idle, or sending a query too slowly
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
            if self.changed():
                await self.reload()
            zone = self.zones.get(gw)
            if zone is None:
                return
            ans = answer(zone, data, client, udp=False)
            wire = ans.wire
            if ans.forward and self.forwarding >= MAX_FORWARDS:
                wire = error_for(data, RCODE.REFUSED)
            elif ans.forward:
                self.forwarding += 1
                try:
                    wire = await forward(zone, data, udp=False)
                finally:
                    self.forwarding -= 1
            if wire is None:
                return
            writer.write(struct.pack("!H", len(wire)) + wire)
            if writer.transport.get_write_buffer_size():  # the kernel's buffer is full
                async with asyncio.timeout(TCP_WRITE):
                    await writer.drain()
            else:  # one query per connection per loop turn: pipelined queries already
                await asyncio.sleep(0)  # buffered must not keep UDP waiting

    # lifecycle -------------------------------------------------------
    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        await self.reload()
        idle_since = None
        while not self.stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), TICK)
            if not os.path.exists(self.db_path):
                break  # the state is gone: nothing left to serve
            if self.changed():
                await self.reload()
            elif self.errors:  # a gateway we could not bind: maybe it is free now
                await self._listen_all([gw for gw in self.zones if gw not in self.udp])
            if self.zones:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= LINGER:
                break  # no endpoint has wanted DNS for a while
        for gw in list(self.udp):
            self._close(gw)


def serve(state_dir: str, resolv_paths: list[str] | None = None) -> int:
    """Run until stopped; one server per state dir (the pid file's lock)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s nsnet-dns[%(process)d] %(levelname)s %(message)s")
    pid_path = os.path.join(state_dir, PIDFILE)
    fd = os.open(pid_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server already serves this state
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        asyncio.run(Server(state_dir, resolv_paths).run())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(state_dir, STATUS))
        os.ftruncate(fd, 0)
        os.close(fd)
    return 0
