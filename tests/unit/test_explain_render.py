"""--explain renderings (no root): every request builder of the kernel layer
has a command, and the commands read as iproute2/tc would take them.

Whether they are *true* (replayed with the real tools, the same kernel
state) is tests/e2e/test_explain.py."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil

import pytest

import nsnet.kernel
from nsnet.kernel import record
from nsnet.kernel.netlink import Request, attr
from nsnet.kernel.record import Recorder, render, sysctl_arg
from nsnet.kernel.tc import NetemSpec

HOST_NS = os.open("/proc/self/ns/net", os.O_RDONLY)
LINKS = {1: "lo", 7: "br0", 9: "veth1"}
# a conntrack original tuple (as dumped): UDP to 203.0.113.7:5353
_ORIG = attr(1, attr(2, bytes([203, 0, 113, 7]))) + \
    attr(2, attr(1, bytes([17])) + attr(3, (5353).to_bytes(2, "big")))

# one call per builder: a builder missing here fails test_every_builder_renders
SAMPLES = {
    "req_new_bridge": lambda k: k.rtnl.req_new_bridge("br0", 1500, mac="02:00:00:00:00:01"),
    "req_new_veth": lambda k: k.rtnl.req_new_veth(k.rtnl.VethSpec(
        "veth1", "eth0", HOST_NS, master=7, mtu=1500, peer_mac=b"\x02\0\0\0\0\x02")),
    "req_new_nsid": lambda k: k.rtnl.req_new_nsid(HOST_NS, 1 << 30),
    "req_set_link": lambda k: k.rtnl.req_set_link("veth1", up=True, alias="nsnet:ep:x",
                                                  hairpin=True),
    "req_del_link": lambda k: k.rtnl.req_del_link(index=9),
    "req_del_group": lambda k: k.rtnl.req_del_group(1234),
    "req_add_addr": lambda k: k.rtnl.req_add_addr(7, "172.16.1.254/16"),
    "req_del_addr": lambda k: k.rtnl.req_del_addr(1, "127.0.0.1/8"),
    "req_add_route": lambda k: k.rtnl.req_add_route("default", "172.16.1.254", oif=9),
    "req_del_route": lambda k: k.rtnl.req_del_route("10.0.0.0/24"),
    "req_add_route6": lambda k: k.rtnl.req_add_route6("default", "fd00:1::1", oif=9),
    "req_del_route6": lambda k: k.rtnl.req_del_route6("fd00:2::/64"),
    "req_del_neigh": lambda k: k.rtnl.req_del_neigh(9, "172.16.1.2"),
    "req_bridge_mcast_snooping": lambda k: k.rtnl.req_bridge_mcast_snooping(7, False),
    # reads (reconcile's view of an endpoint, kernel/views.py): never recorded, rendered alike
    "req_dump_addresses": lambda k: k.rtnl.req_dump_addresses(2, 9),
    "req_dump_routes": lambda k: k.rtnl.req_dump_routes(10),
    "req_tbf": lambda k: k.tc.req_tbf(9, 10_000_000),
    "req_del_root_qdisc": lambda k: k.tc.req_del_root_qdisc(9),
    "req_clsact": lambda k: k.tc.req_clsact(7),
    "req_loopback_guard": lambda k: k.tc.req_loopback_guard(7, 0x2000000),
    "req_netem": lambda k: k.tc.req_netem(9, NetemSpec(delay_us=20000, jitter_us=5000,
                                                       loss_pct=1.5, rate_Bps=1_250_000)),
    "req_ct_delete": lambda k: k.conntrack.req_ct_delete(_ORIG),
    "req_new_vxlan": lambda k: k.vxlan.req_new_vxlan(k.vxlan.VxlanSpec(
        "vx1", 42, "192.0.2.1", 9, mtu=1450, master=7)),
    "req_fdb_append": lambda k: k.vxlan.req_fdb_append(9, "02:00:00:00:00:05", "192.0.2.2"),
    "req_fdb_del": lambda k: k.vxlan.req_fdb_del(9, "02:00:00:00:00:05", "192.0.2.2"),
    "req_neigh_replace": lambda k: k.vxlan.req_neigh_replace(9, "10.9.0.5",
                                                             "02:00:00:00:00:05"),
    "req_neigh_del": lambda k: k.vxlan.req_neigh_del(9, "10.9.0.5"),
}


class _Modules:
    def __getattr__(self, name: str):
        return importlib.import_module(f"nsnet.kernel.{name}")


def _builders() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(nsnet.kernel.__path__):
        module = importlib.import_module(f"nsnet.kernel.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("req_") and fn.__module__ == module.__name__:
                found[name] = fn
    return found


def _render(req: Request) -> str:
    rec = Recorder(host=os.fstat(HOST_NS).st_ino, netns_dir="/run/netns")
    return render(req, [], LINKS, rec)


def test_every_builder_renders():
    builders = _builders()
    missing = sorted(set(builders) - set(SAMPLES))
    assert not missing, f"request builders without a sample (and so unchecked): {missing}"
    for name in builders:
        req = SAMPLES[name](_Modules())
        assert isinstance(req, Request)
        assert req.cmd(), f"{name} builds a request without a command for --explain"
        text = _render(req)
        assert text.split()[0] in ("ip", "tc", "bridge", "conntrack"), text
        assert "no command rendering" not in text and "if" + "9" not in text.split(), text


@pytest.mark.parametrize(("name", "expected"), [
    ("req_new_bridge", "ip link add br0 address 02:00:00:00:00:01 mtu 1500 up type bridge"),
    ("req_new_veth", "ip link add veth1 master br0 mtu 1500 type veth peer name eth0 "
                     "mtu 1500 address 02:00:00:00:00:02"),  # peer in the host: no netns
    ("req_set_link", "ip link set dev veth1 up alias nsnet:ep:x type bridge_slave hairpin on"),
    ("req_del_link", "ip link del dev veth1"),
    # the sample numbers the host itself: its name is left out, never "netns" popped
    ("req_new_nsid", "ip netns set /proc/self/fd/{fd} 1073741824"),
    ("req_del_group", "ip link del group 1234"),
    ("req_add_addr", "ip addr add 172.16.1.254/16 dev br0"),
    ("req_add_route", "ip route add default via 172.16.1.254 dev veth1 proto boot"),
    ("req_del_route", "ip route del 10.0.0.0/24"),
    ("req_add_route6", "ip -6 route add default via fd00:1::1 dev veth1 proto boot"),
    ("req_del_route6", "ip -6 route del fd00:2::/64"),
    ("req_del_neigh", "ip neigh del 172.16.1.2 dev veth1"),
    ("req_bridge_mcast_snooping", "ip link set dev br0 type bridge mcast_snooping 0"),
    ("req_dump_addresses", "ip -4 addr show dev veth1"),
    ("req_dump_routes", "ip -6 route show table main"),
    ("req_clsact", "tc qdisc add dev br0 clsact"),
    ("req_del_root_qdisc", "tc qdisc del dev veth1 root"),
    ("req_netem", "tc qdisc replace dev veth1 root handle 1: netem delay 20000us 5000us "
                  "loss 1.5% rate 10000000bit limit 1000"),
    ("req_new_vxlan", "ip link add vx1 mtu 1450 master br0 type vxlan id 42 local 192.0.2.1 "
                      "dev veth1 dstport 4789 nolearning proxy"),
    ("req_fdb_append", "bridge fdb append 02:00:00:00:00:05 dev veth1 dst 192.0.2.2 self "
                       "permanent"),
    ("req_fdb_del", "bridge fdb del 02:00:00:00:00:05 dev veth1 dst 192.0.2.2 self"),
    ("req_neigh_replace", "ip neigh replace 10.9.0.5 lladdr 02:00:00:00:00:05 dev veth1 nud "
                          "permanent"),
    ("req_neigh_del", "ip neigh del 10.9.0.5 dev veth1"),
])
def test_renderings(name: str, expected: str):
    assert _render(SAMPLES[name](_Modules())).split("  # ")[0] == expected.format(fd=HOST_NS)


def test_guard_renders_tc_bytecode_of_the_same_program():
    from nsnet.kernel.tc import guard_program

    text = _render(SAMPLES["req_loopback_guard"](_Modules()))
    assert text.startswith("tc filter add dev br0 ingress pref 1 handle 1 protocol all bpf "
                           "direct-action bytecode '9,32 0 0 4294963220,")
    code = text.split("bytecode '", 1)[1].split("'", 1)[0].split(",")
    assert int(code[0]) == len(guard_program(0x2000000)) // 8 == len(code) - 1


def test_namespaced_requests_take_dash_n_and_peers_name_their_namespace(tmp_path):
    rec = Recorder(host=-1, netns_dir=str(tmp_path))
    rec.names[os.fstat(HOST_NS).st_ino] = str(tmp_path / "ns1")
    veth = SAMPLES["req_new_veth"](_Modules())
    assert " peer name eth0 netns ns1 " in render(veth, [], LINKS, rec)
    addr = SAMPLES["req_add_addr"](_Modules())
    assert render(addr, ["-n", "ns1"], LINKS, rec).startswith("ip -n ns1 addr add ")
    assert render(SAMPLES["req_clsact"](_Modules()), ["-n", "ns1"], LINKS, rec) == \
        "tc -n ns1 qdisc add dev br0 clsact"


def test_refused_requests_are_comments_never_commands(tmp_path):
    rec = Recorder(host=os.fstat(HOST_NS).st_ino, netns_dir=str(tmp_path))
    reqs = [SAMPLES["req_clsact"](_Modules()), SAMPLES["req_add_addr"](_Modules())]
    rec.netlink(rec.host, reqs, LINKS, [(17, ""), (0, "")])
    lines = rec.entries[0].lines
    assert lines[0].startswith("# refused by the kernel (File exists): tc qdisc add")
    assert lines[1] == "ip addr add 172.16.1.254/16 dev br0"
    assert rec.commands() == "ip addr add 172.16.1.254/16 dev br0\n"


def test_steps_group_consecutive_requests_and_explicit_steps_win(tmp_path):
    rec = Recorder(host=0, netns_dir=str(tmp_path))
    with record.recording(rec):
        rec.add(["a"])
        rec.add(["b"])
        with record.step("named", "why"):
            rec.add(["c"])
    assert [(e.step, e.lines) for e in rec.entries] == [
        ("nsnet", ["a", "b"]),  # no nsnet caller here: the fallback title
        ("named", ["c"])]
    assert "#     why" in rec.render()
    assert record.active() is None


def test_sysctl_keys_with_dotted_interface_names_keep_slashes():
    assert sysctl_arg("net/ipv4/ip_forward", "1") == "net.ipv4.ip_forward=1"
    assert sysctl_arg("net/ipv6/conf/eth0.10/disable_ipv6", "1") == \
        "net/ipv6/conf/eth0.10/disable_ipv6=1"


def test_no_recorder_costs_nothing_and_records_nothing():
    assert record.active() is None
    req = SAMPLES["req_add_addr"](_Modules())
    assert callable(req.cmd)  # a closure: the words are built only when rendered


MUTATING = ["lab", "ns add", "ns rm", "network create", "network rm", "network prune",
            "connect", "disconnect", "port add", "port rm", "up", "down", "reconcile", "gc"]


@pytest.mark.parametrize("command", MUTATING)
def test_every_mutating_command_takes_explain_and_dry_run(command: str):
    from nsnet.cli.main import cli

    cmd = cli
    for word in command.split():
        cmd = cmd.commands[word]  # type: ignore[attr-defined]
    options = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    assert {"--explain", "--dry-run"} <= options, command


def test_every_golden_firewall_transaction_translates_to_nft_syntax():
    """nsnet's transactions (tests/unit/golden/firewall.json) all print as nft
    text; that the text makes the same ruleset is the e2e differential's."""
    import json
    import pathlib

    from nsnet.kernel.record import nft_text

    golden = json.loads((pathlib.Path(__file__).parent / "golden" / "firewall.json").read_text())
    for name, cmds in golden.items():
        text = nft_text(json.dumps({"nftables": [{"metainfo": {}}, *cmds]}))
        assert text, f"{name}: not translated"
        assert "ct state established,related accept" in text or "delete" in text


def test_untranslatable_nft_falls_back_to_the_json(tmp_path):
    rec = Recorder(host=1, netns_dir=str(tmp_path))
    odd = '{"nftables": [{"add": {"rule": {"family": "ip", "table": "t", "chain": "c", ' \
          '"expr": [{"queue": {"num": 1}}]}}}]}'
    rec.nft(1, odd)
    assert rec.entries[0].lines[0] == "nft -j -f - <<'EOF'"
