"""The firewall layer without a kernel: rule builders against golden JSON,
and the fake driver's simulation of what nftables would hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsnet import FakeFirewall, InvalidInput, KernelError, parse_ports
from nsnet.firewall import facts_of_commands
from nsnet.firewall import rules as fw
from nsnet.model import Endpoint, Network, PortMap, Published

GOLDEN = Path(__file__).parent / "golden" / "firewall.json"


def _net(i: int, **kw) -> Network:
    eps = tuple(Endpoint(f"{i:02d}ep{j}".ljust(32, "e"), f"net{i}", f"ns{i}-{j}", "eth0",
                         f"veth{i}x{j}", f"10.{i}.0.{j + 2}/24", "02:00:00:00:00:01",
                         f"10.{i}.0.1", True, 1.0) for j in range(kw.pop("eps", 2)))
    return Network(f"{i:02d}".ljust(32, "a"), f"net{i}", f"br{i}", f"10.{i}.0.0/24",
                   f"10.{i}.0.1", f"10.{i}.0.0/24", 1500, 1.0, endpoints=eps, **kw)


def _pub(net: Network, spec: str, j: int = 0) -> list[Published]:
    ep = net.endpoints[j]
    return [Published(ep.id, net.name, ep.netns, ep.ip, m) for m in parse_ports([spec])]


def _transactions() -> dict[str, list]:
    a, b = _net(1), _net(2, icc=False, masquerade=False)
    c = _net(3, internal=True)
    pubs = _pub(a, "8080:80") + _pub(a, "198.51.100.1:5353:53/udp", 1)
    return {
        "create a": fw.skeleton() + fw.network_add(a, []),
        "create b (no-icc, no-masquerade)": fw.skeleton() + fw.network_add(b, [a]),
        "create c (internal)": fw.skeleton() + fw.network_add(c, [a, b]),
        "publish on a": fw.skeleton() + fw.ports_add(pubs),
        "unpublish on a": fw.skeleton() + fw.ports_remove(pubs),
        "remove b": fw.skeleton() + fw.network_remove(b, [a, c]),
        "remove the last": fw.teardown(),
    }


def test_transactions_match_golden_json() -> None:
    got = _transactions()
    if os.environ.get("NSNET_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text()), "rules changed: NSNET_REGEN_GOLDEN=1 to accept"


def test_every_rule_and_element_names_its_owner() -> None:
    for cmds in _transactions().values():
        for cmd in cmds:
            (_op, body), = cmd.items()
            obj = next(iter(body.values()))
            if "rule" in body:
                assert obj["comment"].startswith("nsnet")
            if "element" in body:
                for e in obj["elem"]:
                    assert (e[0] if isinstance(e, list) else e)["elem"]["comment"].startswith(
                        "nsnet:")


def test_fake_replays_incremental_changes_like_a_full_rebuild() -> None:
    fake = FakeFirewall()
    a, b = _net(1), _net(2, icc=False)
    pubs = _pub(a, "8080-8082:80-82")
    fake.apply(fw.skeleton() + fw.network_add(a, []))
    empty_a = fake.facts()
    fake.apply(fw.skeleton() + fw.network_add(b, [a]))
    fake.apply(fw.skeleton() + fw.ports_add(pubs))
    assert fake.facts() == facts_of_commands(fw.full([a, b], pubs))
    fake.apply(fw.skeleton() + fw.ports_remove(pubs))
    fake.apply(fw.skeleton() + fw.network_remove(b, [a]))
    assert fake.facts() == empty_a
    fake.apply(fw.skeleton() + fw.network_remove(b, [a]))  # idempotent: a roll-forward rerun
    assert fake.facts() == empty_a
    fake.apply(fw.teardown())
    fake.apply(fw.teardown())
    assert not fake.facts()


def test_a_failing_transaction_changes_nothing() -> None:
    fake = FakeFirewall()
    fake.apply(fw.skeleton() + fw.network_add(_net(1), []))
    before = fake.facts()
    bad = fw.skeleton() + fw.ports_add(_pub(_net(1), "80:80")) + [
        {"delete": {"chain": {"family": "ip", "table": "nsnet", "name": "nope"}}}]
    with pytest.raises(KernelError):
        fake.apply(bad)
    assert fake.facts() == before and len(fake.transactions) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.integers(0, 3)),
                min_size=1, max_size=5), st.data())
def test_any_add_remove_order_ends_where_it_started(flags, data) -> None:
    nets = [_net(i + 1, masquerade=m, internal=n, icc=c, eps=e)
            for i, (m, n, c, e) in enumerate(flags)]
    fake = FakeFirewall()
    for i, net in enumerate(nets):
        fake.apply(fw.skeleton() + fw.network_add(net, nets[:i]))
    pubs = [p for i, net in enumerate(nets) if net.endpoints and not net.internal
            for p in _pub(net, f"{1000 + i}:80")]
    fake.apply(fw.skeleton() + fw.ports_add(pubs))
    assert fake.facts() == facts_of_commands(fw.full(nets, pubs))
    order = data.draw(st.permutations(range(len(nets))))
    left = list(nets)
    fake.apply(fw.skeleton() + fw.ports_remove(pubs))
    for i in order:
        left.remove(nets[i])
        fake.apply(fw.teardown() if not left else fw.skeleton() + fw.network_remove(nets[i], left))
        assert fake.facts() == facts_of_commands(fw.full(left, []))


@pytest.mark.parametrize(("spec", "want"), [
    ("8080:80", [PortMap("tcp", "", 8080, 80)]),
    ("0.0.0.0:53:53/udp", [PortMap("udp", "", 53, 53)]),
    ("127.0.0.1:8000-8001:80-81/TCP", [PortMap("tcp", "127.0.0.1", 8000, 80),
                                       PortMap("tcp", "127.0.0.1", 8001, 81)]),
])
def test_port_specs(spec: str, want: list[PortMap]) -> None:
    assert list(parse_ports([spec])) == want


@pytest.mark.parametrize("spec", ["0:80", "80:0", "65536:80", "80:80/sctp", "9-8:1-2",
                                  "8000-8002:80-81", "x:80", "1.2.3.4.5:80:80", "::1:80:80",
                                  "", ":80", "80:", "1:2:3:4"])
def test_bad_port_specs(spec: str) -> None:
    with pytest.raises(InvalidInput, match="port"):
        parse_ports([spec])


def test_ephemeral_host_ports_are_zero_until_published() -> None:
    # Docker's -p 80 and -p IP::80: the host port is chosen when published
    assert list(parse_ports(["80", "127.0.0.1::53/udp", "90-91"])) == [
        PortMap("tcp", "", 0, 80), PortMap("udp", "127.0.0.1", 0, 53),
        PortMap("tcp", "", 0, 90), PortMap("tcp", "", 0, 91)]
    assert len(parse_ports(["80", "80"])) == 2  # two host ports for one container port


def test_clashing_specs() -> None:
    for specs in (["80:80", "80:81"], ["1.2.3.4:80:80", "80:81"], ["80-90:80-90", "85:1"]):
        with pytest.raises(InvalidInput, match="published twice"):
            parse_ports(specs)
    assert len(parse_ports(["80:80", "80:80/udp", "1.2.3.4:81:80", "1.2.3.5:81:80"])) == 4


@pytest.mark.parametrize(("host_ip", "listener", "diverted"), [
    ("", "0.0.0.0", True),  # both on every address
    ("", "127.0.0.53", True),  # a 0.0.0.0 mapping DNATs the host's own loopback too
    ("", "::", True),  # dual-stack listener takes IPv4
    ("", "::ffff:198.51.100.1", True),
    ("", "2001:db8::1", False),  # IPv6 only: nsnet's DNAT is IPv4
    ("", "10.1.0.1", False),  # a gateway: never DNATed (nsnet's DNS lives there)
    ("198.51.100.1", "0.0.0.0", True),
    ("198.51.100.1", "198.51.100.1", True),
    ("198.51.100.1", "198.51.100.3", False),
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "198.51.100.1", False),
])
def test_which_host_listeners_a_mapping_would_divert(host_ip: str, listener: str,
                                                     diverted: bool) -> None:
    from nsnet.engine.ports import diverts as _diverts
    from nsnet.kernel import Listener

    m = PortMap("tcp", host_ip, 53, 53)
    assert _diverts(m, Listener("tcp", listener, 53, 1), {"10.1.0.1"}) is diverted


def test_the_tc_loopback_guard_lets_only_marked_frames_to_127_through() -> None:
    """The classic-BPF program, run by a tiny interpreter of the opcodes it
    uses, on the frames that matter."""
    import struct

    from nsnet.kernel.tc import guard_program

    ops = guard_program(fw.LOCALNET_MARK)
    prog = [struct.unpack_from("=HBBI", ops, i) for i in range(0, len(ops), 8)]

    def run(frame: bytes, mark: int) -> int:
        a, pc = 0, 0
        while True:
            code, jt, jf, k = prog[pc]
            pc += 1
            if code == 0x20:
                a = mark if k == 0xFFFFF014 else struct.unpack_from("!I", frame, k)[0]
            elif code == 0x28:
                a = struct.unpack_from("!H", frame, k)[0]
            elif code == 0x54:
                a &= k
            elif code in (0x15, 0x45):
                hit = (a == k) if code == 0x15 else bool(a & k)
                pc += jt if hit else jf
            elif code == 0x06:
                return k

    def frame(dst: str, ethertype: int = 0x0800) -> bytes:
        import socket

        return b"\0" * 12 + struct.pack("!H", ethertype) + b"\0" * 16 + socket.inet_aton(dst)

    shot, next_filter = 2, 0xFFFFFFFF
    assert run(frame("127.0.0.1"), 0) == shot
    assert run(frame("127.255.0.9"), 0x1) == shot
    assert run(frame("127.0.0.1"), fw.LOCALNET_MARK) == next_filter
    assert run(frame("10.1.0.1"), 0) == next_filter
    assert run(frame("127.0.0.1", 0x86DD), 0) == next_filter


@pytest.mark.parametrize(("family", "addr"), [(2, "127.0.0.53"), (10, "::"),
                                              (10, "::ffff:198.51.100.1")])
def test_sock_diag_messages_decode_to_listeners(family: int, addr: str) -> None:
    """inet_diag_msg as the kernel lays it out (port big-endian, inode at 68)."""
    import socket
    import struct

    from nsnet.kernel.sockets import _decode

    raw = socket.inet_pton(family, addr).ljust(16, b"\0")
    body = struct.pack("=BBBB", family, 10, 0, 0) + struct.pack("!HH", 8080, 0) + raw + \
        b"\0" * 16 + struct.pack("=I8sIIIII", 0, b"", 0, 0, 0, 0, 4242)
    lst = _decode(body, "tcp")
    assert (lst.address, lst.port, lst.inode) == (addr, 8080, 4242)
