"""Names that cannot be (#12.16): every query gets an answer, the server
never logs a traceback, and keeps answering."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dnstools
from world import OUT_IP

RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
REVERSE = [b"2", b"0", b"99", b"10", b"in-addr", b"arpa"]


def wire(qid: int, labels: list[bytes], qtype: int = 12) -> bytes:
    """A query as bytes, labels as given (no client would let us send them)."""
    out = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in labels:
        out += bytes([len(label)]) + label
    return out + b"\0" + struct.pack("!HH", qtype, 1)


class Client:
    """UDP and TCP sockets opened inside an endpoint's namespace."""

    def __init__(self, ns_path: str, server: str) -> None:
        from nsnet.kernel import entered

        self.server, self.fd, self.entered = server, dnstools.in_netns(ns_path), entered
        with entered(self.fd):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.settimeout(3)

    def udp_ask(self, data: bytes) -> bytes:
        self.udp.sendto(data, (self.server, 53))
        while True:
            reply = self.udp.recv(65535)
            if reply[:2] == data[:2]:
                return reply

    def tcp_ask(self, data: bytes) -> bytes:
        with self.entered(self.fd):
            conn = socket.create_connection((self.server, 53), timeout=3)
        with conn:
            conn.sendall(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))[0]
            return conn.recv(size, socket.MSG_WAITALL)

    def close(self) -> None:
        self.udp.close()
        os.close(self.fd)


@pytest.fixture
def names_world(world, tmp_path: Path):
    """An internal network (nothing forwarded) and a routed one forwarding to
    the outside fake upstream, one endpoint each."""
    world.servers.append(dnstools.start_upstream(world.out_path, OUT_IP,
                                                 str(tmp_path / "upstream.log")))
    world.ok("network", "create", "inner", "--subnet", "10.99.0.0/24", "--internal")
    world.ok("network", "create", "outer", "--subnet", "10.100.0.0/24", "--dns", OUT_IP)
    world.ok("connect", "inner", "a", "--create")
    world.ok("connect", "outer", "b", "--create")
    clients = [Client(os.path.join(world.box.netns_dir, "a"), "10.99.0.1"),
               Client(os.path.join(world.box.netns_dir, "b"), "10.100.0.1")]
    try:
        yield world, clients
    finally:
        for c in clients:
            c.close()


def no_traceback(world) -> None:
    text = Path(world.box.state_dir, "dns.log").read_text()
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.attack(
    attack="PTR (and A) queries whose name has a label of 64+ bytes, or is longer than "
           "255 bytes, over UDP and TCP",
    promise="every query gets an answer (FORMERR for a name that cannot be), "
            "never a traceback or silence",
    defect="#12.16")
def test_overlong_labels_and_names_get_formerr(names_world) -> None:
    world, clients = names_world
    cases = [[b"x" * 64, *REVERSE], [b"x" * 64, b"in-addr", b"arpa"], [b"y" * 100],
             [b"z" * 63] * 4 + [b"in-addr", b"arpa"], [b"a" * 63] * 5]
    for client in clients:
        for n, labels in enumerate(cases):
            for qtype in (12, 1):
                for ask in (client.udp_ask, client.tcp_ask):
                    reply = ask(wire(0x4000 + n, labels, qtype))
                    assert reply[:2] == struct.pack("!H", 0x4000 + n)
                    assert reply[2] & 0x80 and reply[3] & 0x0F == RCODES["FORMERR"], labels
        # and a real name still answers
        msg = dnstools.dig(os.path.join(world.box.netns_dir, "a" if client is clients[0] else "b"),
                           f"@{client.server}", "-x", client.server[:-1] + "2")
        assert msg["status"] == "NOERROR" and msg["ANSWER"], msg["raw"]
    no_traceback(world)


_HOSTNAME = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_"
_LABEL = st.one_of(st.binary(min_size=1, max_size=70),  # mostly not ASCII: FORMERR at parse
                   st.text(_HOSTNAME, min_size=60, max_size=70).map(str.encode),  # around 63
                   st.text(_HOSTNAME + ". *\\", min_size=1, max_size=70).map(str.encode),
                   st.text("abcdefgh.-_ \\\u00e9", min_size=1, max_size=12).map(str.encode),
                   st.sampled_from([b"a", b"b", b"in-addr", b"arpa", b"10", b"99", b"2", b"."]))
_QTYPE = st.one_of(st.sampled_from([1, 2, 5, 6, 12, 15, 16, 28, 33, 255]),
                   st.integers(0, 65535))


@pytest.mark.attack(
    attack="fuzzed names (binary labels, dots and spaces inside labels, 64-70-byte labels, "
           "reverse-zone suffixes) and query types, to an internal and a forwarding network",
    promise="the DNS server answers every query with a DNS answer and never logs a traceback",
    defect="#12.16")
def test_fuzzed_names_always_get_an_answer(names_world) -> None:
    world, clients = names_world

    @settings(max_examples=int(os.environ.get("NSNET_FUZZ_EXAMPLES", "300")), deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(_LABEL, max_size=8), st.booleans(), _QTYPE, st.integers(0, 1),
           st.integers(1, 0xFFFF))
    def ask(labels: list[bytes], reverse: bool, qtype: int, which: int, qid: int) -> None:
        client = clients[which]
        reply = client.udp_ask(wire(qid, labels + (REVERSE if reverse else []), qtype))
        assert reply[2] & 0x80, reply  # an answer, whatever it says
        assert reply[3] & 0x0F in RCODES.values(), reply

    ask()
    no_traceback(world)
    for client in clients:  # still serving
        assert client.udp_ask(wire(7, [b"a" if client is clients[0] else b"b"], 1))[7] == 1
