"""``nsnet doctor``: a catalogue of injected faults, each broken with plain
commands (ip, bridge, sysctl, nft) inside the sandbox, and doctor must name
the broken hop, its cause, and a command that fixes it.  A healthy path
reports every hop OK, and doctor leaves the kernel as it found it.

"Overlay peer host down" (#17) needs simulated hosts and etcd: it is tried in
tests/e2e/test_overlay_driver.py::test_a_dead_hosts_entries_go_within_its_ttl_and_come_back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

OUT = "198.51.100.2"
SUBNET, GW, A_IP, B_IP = "10.77.0.0/24", "10.77.0.1", "10.77.0.2", "10.77.0.3"


def doctor(box, *args: str) -> dict:
    proc = box.cli("doctor", *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] == (proc.returncode == 0)
    return data


def failure(box, *args: str) -> dict:
    data = doctor(box, *args)
    assert not data["ok"], json.dumps(data, indent=1)
    fail = data["failure"]
    # the walk stops at the first failure (a failed probe may follow the
    # firewall verdict that explains it)
    first = data["hops"].index(fail)
    assert all(h["ok"] for h in data["hops"][:first])
    assert [h["name"] for h in data["hops"][first + 1:]] in ([], ["probe"])
    return fail


def host_end(box, ns: str) -> str:
    eps = json.loads(box.cli("network", "inspect", "front").stdout)[0]["endpoints"]
    return next(e["host_ifname"] for e in eps if e["netns"] == ns)


def bridge(box, net: str = "front") -> str:
    return json.loads(box.cli("network", "inspect", net).stdout)[0]["bridge"]


def run_fix(box, fix: str) -> None:
    """Run the command doctor printed (the sandbox's host/netns settings are
    in the environment, as for the user)."""
    argv = fix.split()
    if argv[:2] == ["nsnet", "ns"] or argv[0] == "nsnet":
        proc = box.cli(*argv[1:])
    else:
        proc = box.host(*argv, check=False)
    assert proc.returncode == 0, (fix, proc.stderr)


@pytest.fixture
def lan(world):
    """Network front (10.77.0.0/24): a at .2, b at .3 with a TCP server on 80
    published as host port 8080; the outside namespace at 198.51.100.2."""
    world.ok("network", "create", "front", "--subnet", SUBNET)
    world.ok("connect", "front", "a", "--create")
    world.ok("connect", "front", "b", "--create", "-p", "8080:80")
    world.serve_in("b", "tcp", 80)
    return world


# ------------------------------------------------------------ healthy
@pytest.mark.parametrize("args", [("a", "b"), ("a", "b:80"), ("a", B_IP), ("a", OUT),
                                  ("b", "a"), ("host", "b"), ("a", "b:5353/udp"),
                                  ("outside", "b:80"), ("host", "198.51.100.1:8080/tcp"),
                                  ("a", "198.51.100.1:8080")])  # the last one: hairpin
def test_healthy_path_reports_every_hop_ok(lan, args):
    lan.serve_in("b", "udp", 5353)
    data = doctor(lan.box, *args)
    assert data["ok"], json.dumps(data, indent=1)
    names = [h["name"] for h in data["hops"]]
    assert names[-2:] == ["firewall", "probe"]
    assert data["failure"] is None


def test_endpoints_by_id_and_host_veth_name(lan):
    eps = json.loads(lan.box.cli("network", "inspect", "front").stdout)[0]["endpoints"]
    a = next(e for e in eps if e["netns"] == "a")
    b = next(e for e in eps if e["netns"] == "b")
    data = doctor(lan.box, a["id"], b["host_ifname"])
    assert data["ok"] and "name" not in [h["name"] for h in data["hops"]]


def test_text_output_names_every_hop(lan):
    proc = lan.box.cli("doctor", "a", "b:80")
    assert proc.returncode == 0, proc.stderr
    for name in ("source interface", "route lookup", "source bridge port", "neighbour",
                 "listener", "probe"):
        assert name in proc.stdout
    assert "every hop is OK" in proc.stdout


# ------------------------------------------------------------ catalogue
def test_source_interface_down(lan):
    lan.box.inside("a", "ip", "link", "set", "eth0", "down")
    fail = failure(lan.box, "a", "b")
    assert fail["name"] == "source interface" and "down" in fail["cause"]
    assert fail["fix"] == "nsnet ns exec a -- ip link set eth0 up"
    run_fix(lan.box, fail["fix"])
    assert doctor(lan.box, "a", "b")["ok"]


def test_destination_interface_down(lan):
    lan.box.inside("b", "ip", "link", "set", "eth0", "down")
    fail = failure(lan.box, "a", "b")
    assert fail["name"] == "destination interface" and fail["where"] == "b:eth0"
    assert fail["fix"] == "nsnet ns exec b -- ip link set eth0 up"


def test_host_end_of_veth_down(lan):
    veth = host_end(lan.box, "b")
    lan.box.host("ip", "link", "set", veth, "down")
    fail = failure(lan.box, "a", "b")
    # seen from b: eth0 has no carrier because its peer in the host is down
    assert fail["name"] in ("destination interface", "destination veth peer")
    assert veth in fail["cause"] and fail["fix"].endswith(f"ip link set {veth} up")


def test_address_removed(lan):
    lan.box.inside("a", "ip", "addr", "del", f"{A_IP}/24", "dev", "eth0")
    fail = failure(lan.box, "a", "b")
    assert fail["name"] == "source address" and f"{A_IP}/24" in fail["cause"]
    assert fail["fix"] == f"nsnet ns exec a -- ip addr add {A_IP}/24 dev eth0"


def test_default_route_removed(lan):
    lan.box.inside("a", "ip", "route", "del", "default")
    fail = failure(lan.box, "a", OUT)
    assert fail["name"] == "route lookup" and "default route" in fail["cause"]
    assert fail["fix"] == f"nsnet ns exec a -- ip route add default via {GW} dev eth0"
    run_fix(lan.box, fail["fix"])
    assert doctor(lan.box, "a", OUT)["ok"]


def test_wrong_gateway(lan):
    lan.box.inside("a", "ip", "route", "replace", "default", "via", "10.77.0.99")
    fail = failure(lan.box, "a", OUT)
    assert fail["name"] == "route lookup"
    assert "10.77.0.99" in fail["cause"] and f"gateway {GW}" in fail["cause"]
    assert "ip route replace default via 10.77.0.1" in fail["fix"]


def test_bridge_port_disabled(lan):
    veth = host_end(lan.box, "b")
    lan.box.host("bridge", "link", "set", "dev", veth, "state", "0")
    fail = failure(lan.box, "a", "b")
    assert fail["name"] == "destination bridge port" and "disabled" in fail["cause"]
    assert fail["fix"].endswith(f"bridge link set dev {veth} state 3")
    run_fix(lan.box, fail["fix"])
    assert doctor(lan.box, "a", "b")["ok"]


def test_vlan_filtering_splits_the_ports(lan):
    box, veth = lan.box, host_end(lan.box, "b")
    on = box.host("ip", "link", "set", bridge(box), "type", "bridge", "vlan_filtering", "1",
                  check=False)
    if _kernel_config().get("CONFIG_BRIDGE_VLAN_FILTERING") is None:
        # this project's kernel: no VLAN filtering at all, and doctor --kernel says so
        assert on.returncode != 0
        report = json.loads(box.host(*box.cli_argv(), "doctor", "--kernel", "--json").stdout)
        assert not next(f for f in report if f["name"] == "bridge vlan_filtering")["available"]
        return
    assert on.returncode == 0, on.stderr
    box.host("bridge", "vlan", "del", "dev", veth, "vid", "1")
    fail = failure(box, "a", "b")
    assert fail["name"] == "vlan" and "VLAN 1" in fail["cause"] and veth in fail["cause"]
    assert fail["fix"].endswith(f"bridge vlan add dev {veth} vid 1 pvid untagged")
    run_fix(box, fail["fix"])
    assert doctor(box, "a", "b")["ok"]


def test_veth_detached_from_bridge(lan):
    veth = host_end(lan.box, "a")
    lan.box.host("ip", "link", "set", veth, "nomaster")
    fail = failure(lan.box, "a", "b")
    assert fail["name"] == "source veth peer" and "not attached" in fail["cause"]
    assert fail["fix"].endswith(f"ip link set {veth} master {bridge(lan.box)}")


def test_ip_forwarding_off(lan):
    lan.box.host("sysctl", "-qw", "net.ipv4.ip_forward=0")
    fail = failure(lan.box, "a", OUT)
    assert fail["name"] == "host forwarding" and "forwarding is off" in fail["cause"]
    assert fail["fix"].endswith("sysctl -w net.ipv4.ip_forward=1")


def test_foreign_nft_drop_rule_is_named(lan):
    _foreign_forward_drop_is_named(lan.box, "inet", "ip", OUT)


def _foreign_forward_drop_is_named(box, table: str, l3: str, dst: str) -> dict:
    """A drop rule of someone else's table (family ``table``) on the forward
    hook, for ``l3 daddr dst``: doctor names it and the fix it prints works."""
    box.host("nft", "add", "table", table, "foreign")
    box.host("nft", "add", "chain", table, "foreign", "block",
             "{ type filter hook forward priority 0; }")
    box.host("nft", "add", "rule", table, "foreign", "block", l3, "daddr", dst, "drop")
    fail = failure(box, "a", dst)
    assert fail["name"] == "firewall"
    assert f"{table} foreign" in fail["cause"] and "chain block" in fail["cause"]
    assert fail["fix"].startswith(f"nft delete rule {table} foreign block handle ")
    run_fix(box, fail["fix"])  # the printed command really removes that rule
    assert doctor(box, "a", dst)["ok"]
    box.host("nft", "delete", "table", table, "foreign")
    return fail


def test_foreign_bridge_family_drop_is_named(lan):
    box = lan.box
    box.host("nft", "add", "table", "bridge", "foreign")
    box.host("nft", "add", "chain", "bridge", "foreign", "l2",
             "{ type filter hook forward priority 0; }")
    box.host("nft", "add", "rule", "bridge", "foreign", "l2", "ip", "daddr", B_IP, "drop")
    fail = failure(box, "a", "b")
    assert fail["name"] == "firewall" and "bridge foreign" in fail["cause"]
    assert fail["fix"].startswith("nft delete rule bridge foreign l2 handle ")
    box.host("nft", "delete", "table", "bridge", "foreign")


def test_drop_policy_inside_the_destination_is_named(lan):
    box = lan.box
    box.inside("b", "nft", "add", "table", "inet", "local")
    box.inside("b", "nft", "add", "chain", "inet", "local", "inp",
               "{ type filter hook input priority 0; policy drop; }")
    fail = failure(box, "a", "b:80")
    assert fail["name"] == "firewall" and fail["where"] == "b: table inet local chain inp"
    assert "policy drop" in fail["cause"]
    assert fail["fix"] == "nsnet ns exec b -- nft 'chain inet local inp { policy accept; }'"


def test_internal_network(world):
    world.ok("network", "create", "priv", "--subnet", "10.78.0.0/24", "--internal")
    world.ok("connect", "priv", "a", "--create")
    fail = failure(world.box, "a", OUT)
    assert fail["name"] == "policy" and "--internal" in fail["cause"]


def test_no_icc(world):
    world.ok("network", "create", "quiet", "--subnet", "10.79.0.0/24", "--no-icc")
    world.ok("connect", "quiet", "a", "b", "--create")
    fail = failure(world.box, "a", "b")
    assert fail["name"] == "policy" and "--no-icc" in fail["cause"]


def test_isolation_between_networks(lan):
    lan.ok("network", "create", "back", "--subnet", "10.80.0.0/24")
    lan.ok("connect", "back", "c", "--create")
    fail = failure(lan.box, "a", "c")
    assert fail["name"] == "policy" and "isolates networks front and back" in fail["cause"]
    assert fail["fix"] == "nsnet connect back a"


def test_published_port_missing(lan):
    fail = failure(lan.box, "outside", "b:81")
    assert fail["name"] == "published port" and "81/tcp of b is not published" in fail["cause"]
    assert fail["fix"] == "nsnet port add front b 81:81/tcp"
    fail = failure(lan.box, "host", "198.51.100.1:9999")
    assert fail["name"] == "published port"


def test_published_port_to_a_closed_port(world):
    world.ok("network", "create", "front", "--subnet", SUBNET)
    world.ok("connect", "front", "b", "--create", "-p", "8080:80")  # nothing listens on 80
    world.serve_in("b", "tcp", 81)  # ... the service listens on 81 instead
    fail = failure(world.box, "outside", "b:80")
    assert fail["name"] == "listener" and "nothing listens on" in fail["cause"]
    assert ":80/tcp in b" in fail["cause"] and "it listens on 81/tcp" in fail["cause"]
    fail = failure(world.box, "host", "198.51.100.1:8080")
    assert fail["name"] == "listener"


def test_mtu_mismatch(lan):
    lan.box.inside("b", "ip", "link", "set", "eth0", "mtu", "1400")
    fail = failure(lan.box, "a", "b")
    assert fail["name"] == "mtu" and "MTU 1400" in fail["cause"] and "1500" in fail["cause"]
    assert fail["fix"] == "nsnet ns exec b -- ip link set eth0 mtu 1500"


def test_rp_filter_drop(lan):
    box = lan.box
    # b's route back to a leaves by another interface, and b filters strictly
    box.inside("b", "ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1")
    box.inside("b", "ip", "link", "set", "x0", "up")
    box.inside("b", "ip", "link", "set", "x1", "up")
    box.inside("b", "ip", "route", "add", f"{A_IP}/32", "dev", "x0")
    box.inside("b", "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1",
               "net.ipv4.conf.eth0.rp_filter=1")
    fail = failure(box, "a", "b")
    assert fail["name"] == "destination input" and "rp_filter" in fail["cause"]
    assert "x0" in fail["cause"]
    assert fail["fix"] == f"nsnet ns exec b -- ip route del {A_IP}/32 dev x0"
    run_fix(box, fail["fix"])
    assert doctor(box, "a", "b")["ok"]


def test_duplicate_address(lan):
    lan.ok("connect", "front", "c", "--create")
    lan.box.inside("c", "ip", "addr", "add", f"{B_IP}/24", "dev", "eth0")
    fail = failure(lan.box, "a", B_IP)
    assert fail["name"] == "neighbour" and "duplicate address" in fail["cause"]
    assert "c:eth0" in fail["cause"]
    assert fail["fix"] == f"nsnet ns exec c -- ip addr del {B_IP}/24 dev eth0"


def test_dns_server_down_for_a_name(lan):
    assert "name" in [h["name"] for h in doctor(lan.box, "a", "b")["hops"]]
    lan.box.stop_dns()
    fail = failure(lan.box, "a", "b")
    assert fail["name"] == "name" and "does not answer" in fail["cause"]
    assert "not running" in fail["cause"] and fail["fix"] == "nsnet reconcile"
    assert doctor(lan.box, "a", B_IP)["ok"]  # by address, DNS is not on the path
    run_fix(lan.box, fail["fix"])
    assert doctor(lan.box, "a", "b")["ok"]


# ------------------------------------------------------------ IPv6 (#16)
OUT6, HOST6 = "2001:db8::2", "2001:db8::1"
A6, B6, GW6 = "fd00:77::2", "fd00:77::3", "fd00:77::1"


def _world6(world) -> None:
    """The outside world of IPv6 too, as tests/e2e/test_ipv6.py has it."""
    world.box.host("ip", "addr", "add", f"{HOST6}/64", "dev", world.box.name("up"), "nodad")
    world.out("ip", "addr", "add", f"{OUT6}/64", "dev", "eth0", "nodad")


@pytest.fixture
def lan6(world):
    """front as a dual-stack network (+ fd00:77::/64): a at ::2, b at ::3
    serving TCP 80 on both families, published as host port 8080."""
    _world6(world)
    world.ok("network", "create", "front", "--subnet", SUBNET, "--subnet", "fd00:77::/64")
    world.ok("connect", "front", "a", "--create")
    world.ok("connect", "front", "b", "--create", "-p", "8080:80")
    world.serve_in("b", "tcp", 80)
    return world


@pytest.fixture
def only6(world):
    """An IPv6-only network: a and b, b serving TCP 80."""
    _world6(world)
    world.ok("network", "create", "six", "--no-ipv4", "--subnet", "fd00:78::/64")
    world.ok("connect", "six", "a", "b", "--create")
    world.serve_in("b", "tcp", 80)
    return world


def _families(data: dict) -> list[int]:
    return sorted({h["family"] for h in data["hops"]})


@pytest.mark.parametrize("args", [("a", "b"), ("a", "b:80"), ("a", B6), ("a", OUT6),
                                  ("host", "b"), (f"[{HOST6}]:8080", None),
                                  ("outside", "b:80")])
def test_healthy_dual_stack_path_walks_both_families(lan6, args):
    args = ("host", args[0]) if args[1] is None else args
    data = doctor(lan6.box, *args)
    assert data["ok"], json.dumps(data, indent=1)
    six = [h for h in data["hops"] if h["family"] == 6]
    assert [h["name"] for h in six][-2:] == ["firewall", "probe"]
    by_address = any(a.count(":") > 1 for a in args)  # an IPv6 address, not NAME:PORT
    assert _families(data) == ([6] if by_address else [4, 6]), data["families"]


def test_ipv6_only_namespaces_are_walked_over_ipv6(only6):
    for args in (("a", "b"), ("a", "b:80"), ("b", "a"), ("a", "fd00:78::3")):
        data = doctor(only6.box, *args)
        assert data["ok"] and _families(data) == [6], json.dumps(data, indent=1)
    text = only6.box.cli("doctor", "a", "b:80")
    assert text.returncode == 0 and "v6 source address" in text.stdout, text.stdout
    # IPv4 asked of namespaces that have none: refused plainly
    assert only6.box.cli("doctor", "-4", "a", "b").returncode == 2


def test_family_option_walks_one_family(lan6):
    assert _families(doctor(lan6.box, "--family", "6", "a", "b")) == [6]
    assert _families(doctor(lan6.box, "-4", "a", "b")) == [4]
    assert lan6.box.cli("doctor", "-4", "a", B6).returncode == 2  # an IPv6 address


def test_v6_address_removed_inside(lan6):
    lan6.box.inside("a", "ip", "-6", "addr", "del", f"{A6}/64", "dev", "eth0")
    fail = failure(lan6.box, "a", "b")
    assert (fail["name"], fail["family"]) == ("source address", 6)
    assert f"{A6}/64" in fail["cause"]
    assert fail["fix"] == f"nsnet ns exec a -- ip addr add {A6}/64 dev eth0 nodad"
    run_fix(lan6.box, fail["fix"])
    assert doctor(lan6.box, "a", "b")["ok"]


def test_v6_default_route_removed(lan6):
    lan6.box.inside("a", "ip", "-6", "route", "del", "default")
    fail = failure(lan6.box, "a", OUT6)
    assert (fail["name"], fail["family"]) == ("route lookup", 6)
    assert "default route" in fail["cause"]
    assert fail["fix"] == f"nsnet ns exec a -- ip -6 route add default via {GW6} dev eth0"
    run_fix(lan6.box, fail["fix"])
    assert doctor(lan6.box, "a", OUT6)["ok"]
    assert doctor(lan6.box, "a", OUT)["ok"]  # IPv4 never depended on it


def test_v6_forwarding_off(lan6):
    lan6.box.host("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
    fail = failure(lan6.box, "a", OUT6)
    assert (fail["name"], fail["family"]) == ("host forwarding", 6)
    assert "IPv6 forwarding is off" in fail["cause"]
    assert fail["fix"].endswith("sysctl -w net.ipv6.conf.all.forwarding=1")
    run_fix(lan6.box, fail["fix"])
    assert doctor(lan6.box, "a", OUT6)["ok"]


def test_flushed_ip6_table_is_named(lan6):
    """nsnet's ip6 table flushed to its drop policies: doctor names the
    chain and sends the user to reconcile."""
    box = lan6.box
    box.host("nft", "flush", "table", "ip6", "nsnet")
    assert doctor(box, "a", OUT)["ok"]  # the ip table is intact
    fail = failure(box, "a", OUT6)
    assert (fail["name"], fail["family"]) == ("firewall", 6)
    assert "ip6 nsnet" in fail["cause"] and fail["fix"] == "nsnet reconcile"
    run_fix(box, fail["fix"])
    assert doctor(box, "a", OUT6)["ok"]


def test_foreign_ip6_drop_rule_is_named(lan6):
    assert _foreign_forward_drop_is_named(lan6.box, "ip6", "ip6", OUT6)["family"] == 6
    assert _foreign_forward_drop_is_named(lan6.box, "inet", "ip6", OUT6)["family"] == 6


def test_interface_down_on_an_ipv6_only_network(only6):
    only6.box.inside("b", "ip", "link", "set", "eth0", "down")
    fail = failure(only6.box, "a", "b")
    assert (fail["name"], fail["family"]) == ("destination interface", 6)
    assert fail["fix"] == "nsnet ns exec b -- ip link set eth0 up"


def test_v6_address_removed_on_an_ipv6_only_network(only6):
    only6.box.inside("b", "ip", "-6", "addr", "del", "fd00:78::3/64", "dev", "eth0")
    fail = failure(only6.box, "a", "b:80")
    assert (fail["name"], fail["family"]) == ("destination address", 6)
    assert fail["fix"] == "nsnet ns exec b -- ip addr add fd00:78::3/64 dev eth0 nodad"


def test_duplicate_v6_address(lan6):
    lan6.ok("connect", "front", "c", "--create")
    names = [(h["name"], h["family"]) for h in doctor(lan6.box, "a", B6)["hops"]]
    assert ("neighbour", 6) in names  # a neighbour solicitation, answered once
    lan6.box.inside("c", "ip", "addr", "add", f"{B6}/64", "dev", "eth0", "nodad")
    fail = failure(lan6.box, "a", B6)
    assert (fail["name"], fail["family"]) == ("neighbour", 6)
    assert "duplicate address" in fail["cause"] and "c:eth0" in fail["cause"]
    assert fail["fix"] == f"nsnet ns exec c -- ip addr del {B6}/64 dev eth0"


def test_aaaa_name_lookup_is_checked(lan6):
    names = [(h["name"], h["family"]) for h in doctor(lan6.box, "a", "b")["hops"]]
    assert ("name", 4) in names and ("name", 6) in names
    lan6.box.stop_dns()
    fail = failure(lan6.box, "a", "b")
    assert fail["name"] == "name" and "does not answer" in fail["cause"]


# ------------------------------------------------------------ promises
def test_doctor_changes_nothing(lan):
    """Read-only: the kernel state (links, addresses, routes, nft ruleset,
    nsnet state) is identical after a healthy and after a failing diagnosis."""
    box = lan.box
    before = box.fingerprint()
    doctor(box, "a", "b:80")
    box.inside("a", "ip", "link", "set", "eth0", "mtu", "1400")
    mtu_fault = box.fingerprint()
    failure(box, "a", "b")
    assert box.fingerprint() == mtu_fault
    box.inside("a", "ip", "link", "set", "eth0", "mtu", "1500")
    assert box.fingerprint() == before
    for ns in ("a", "b"):
        assert "nsnetdoc" not in box.inside(ns, "nft", "list", "ruleset").stdout


def test_trace_tables_are_removed_when_doctor_is_interrupted(lan):
    """Stop doctor while its probe is traced: the temporary tables go."""
    box = lan.box
    proc = subprocess.Popen([*box.cli_argv(), "doctor", "a", "b"], env=box.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while "nsnetdoc" not in box.host("nft", "list", "tables").stdout:
            assert time.monotonic() < deadline and proc.poll() is None, "never traced"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "nsnetdoc" not in box.host("nft", "list", "tables").stdout
    for ns in ("a", "b"):
        assert "nsnetdoc" not in box.inside(ns, "nft", "list", "tables").stdout


def test_unknown_names_are_refused(lan):
    proc = lan.box.cli("doctor", "a", "nosuchthing")
    assert proc.returncode == 3 and "nosuchthing" in proc.stderr
    for bad in ("b:99999", "2001:db8::1", "[2001:db8::1]:80"):
        proc = lan.box.cli("doctor", "a", bad)
        assert proc.returncode == 2, (bad, proc.stderr)
    assert lan.box.cli("doctor", "a", "a").returncode == 2
    proc = lan.box.cli("doctor", "a", "/proc/1/ns/net")  # a path is no namespace name
    assert proc.returncode == 3, proc.stderr


# ------------------------------------------------------------ kernel
def test_kernel_report_matches_this_machine(sandbox):
    """This project's machine: netem missing (so delay/jitter are refused),
    tbf, vxlan, nftables and conntrack present.  Run from inside the sandbox
    host, whose links and ruleset the probes must not touch either."""
    before = sandbox.fingerprint()
    proc = sandbox.host(*sandbox.cli_argv(), "doctor", "--kernel", "--json")
    assert sandbox.fingerprint() == before
    have = {f["name"]: f for f in json.loads(proc.stdout)}
    config = _kernel_config()
    assert config, "no /proc/config.gz: cannot tell what the kernel was built with"
    expect = {"netem": "CONFIG_NET_SCH_NETEM", "tbf": "CONFIG_NET_SCH_TBF",
              "vxlan": "CONFIG_VXLAN", "nftables ip": "CONFIG_NF_TABLES",
              "conntrack": "CONFIG_NF_CONNTRACK", "geneve": "CONFIG_GENEVE",
              "wireguard": "CONFIG_WIREGUARD", "vrf": "CONFIG_NET_VRF",
              "bond": "CONFIG_BONDING", "dummy": "CONFIG_DUMMY", "fq": "CONFIG_NET_SCH_FQ",
              "ipv6": "CONFIG_IPV6", "nftables bridge": "CONFIG_NF_TABLES_BRIDGE"}
    for name, option in expect.items():
        assert option in config, option
        # "m" could be unloadable here; "y" and "not set" are certain
        if config[option] != "m":
            assert have[name]["available"] == (config[option] == "y"), name
    if config["CONFIG_NET_SCH_NETEM"] is None:  # as on this project's machine
        assert not have["netem"]["available"] and "delay" in have["netem"]["disables"]
        assert "unknown" in have["netem"]["detail"]
    for name in ("tbf", "vxlan", "nftables ip", "nftables bridge", "conntrack", "nat"):
        assert have[name]["available"], name


def test_text_kernel_report(sandbox):
    out = sandbox.host(*sandbox.cli_argv(), "doctor", "--kernel").stdout
    line = next(ln for ln in out.splitlines() if ln.split()[1:2] == ["netem"])
    assert line.startswith(("yes", "NO"))


def test_probes_only_between_the_endpoints_it_diagnoses(lan):
    """A bystander on the same bridge receives no IP packet from doctor
    (ARP who-has broadcasts are how any sender finds a neighbour)."""
    box = lan.box
    lan.ok("connect", "front", "c", "--create")
    box.inside("c", "nft", "add", "table", "ip", "watch")
    box.inside("c", "nft", "add", "chain", "ip", "watch", "pre",
               "{ type filter hook prerouting priority -400; }")
    box.inside("c", "nft", "add", "rule", "ip", "watch", "pre", "counter")
    assert doctor(box, "a", "b:80")["ok"] and doctor(box, "a", OUT)["ok"]
    counted = box.inside("c", "nft", "list", "chain", "ip", "watch", "pre").stdout
    assert "counter packets 0 bytes 0" in counted, counted


def _kernel_config() -> dict[str, str | None]:
    import gzip

    out: dict[str, str | None] = {}
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith("CONFIG_"):
                    key, _, value = line.strip().partition("=")
                    out[key] = value
                elif line.startswith("# CONFIG_") and line.rstrip().endswith("is not set"):
                    out[line.split()[1]] = None
    except OSError:
        pass
    return out


def test_delay_refusal_points_to_the_kernel_report(sandbox, tmp_path):
    topo = tmp_path / "wan.yaml"
    topo.write_text("name: wan\nnodes:\n  x: {}\n  y: {}\nlinks:\n"
                    "  - {a: x, b: y, a_ip: 10.9.0.1/30, b_ip: 10.9.0.2/30,\n"
                    "     emulation: {delay: 50ms}}\n")
    proc = sandbox.cli("up", str(topo))
    if _kernel_config().get("CONFIG_NET_SCH_NETEM") is None:
        assert proc.returncode != 0
        assert "nsnet doctor --kernel" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        sandbox.cli("down", str(topo))
