"""Declarative topologies (issue #7): up/status/down, idempotence, targeted
changes, point-to-point links, link emulation with real packets, graphs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent.parent / "examples"


def ifindexes(box, ns: str) -> dict[str, int]:
    return {lk["ifname"]: lk["ifindex"]
            for lk in json.loads(box.inside(ns, "ip", "-j", "link").stdout)}


def ok(box, *args: str) -> str:
    proc = box.cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_up_status_again_down(sandbox, example: str) -> None:
    box = sandbox
    path = str(EXAMPLES / example)
    from nsnet import kernel, load_topology

    spec = load_topology(path)
    if any(e.delay_ms or e.jitter_ms for lk in spec.links for e in (lk.a_to_b, lk.b_to_a)) \
            and not kernel.has_netem():
        proc = box.cli("up", path)  # this kernel has no netem: a clear refusal
        assert proc.returncode == 8 and "netem" in proc.stderr, proc.stderr
        assert box.cli("network", "ls", "--json").stdout.strip() == "[]"
        return
    before = box.fingerprint()
    assert "change(s)" in ok(box, "up", path)
    assert "as the file says" in ok(box, "status", path)
    assert "nothing changed" in ok(box, "up", path)
    assert box.cli("reconcile", "--dry-run").returncode == 0
    ok(box, "down", path)
    assert box.fingerprint() == before


def test_lab_example_is_the_article(sandbox) -> None:
    box = sandbox
    ok(box, "up", str(EXAMPLES / "article-lab.yaml"))
    assert "172.16.1.1/16" in box.inside("ns1", "ip", "-4", "addr", "show", "eth0").stdout
    assert ok(box, "ping", "ns1", "172.16.1.2", "-c", "1", "-i", "0.2")
    bridge = json.loads(box.cli("network", "inspect", "mydocker0").stdout)[0]
    assert bridge["bridge"] == "mydocker0" and bridge["gateway"] == "172.16.1.254"


CHANGING = """
name: grow
networks:
  front: {subnet: 10.70.0.0/24}
  back: {subnet: 10.71.0.0/24, internal: true}
nodes:
  web: {connect: [{network: front}, {network: back}]}
  db: {connect: [{network: back}]}
  %(extra)s
"""


def test_a_changed_file_changes_only_what_changed(sandbox, tmp_path) -> None:
    box = sandbox
    f = tmp_path / "grow.yaml"
    f.write_text(CHANGING % {"extra": ""})
    ok(box, "up", str(f))
    web, db = ifindexes(box, "web"), ifindexes(box, "db")
    f.write_text(CHANGING % {"extra": "cache: {connect: [{network: back, aliases: [c]}]}"})
    out = ok(box, "up", str(f))
    assert "create  node       cache" in out and "web" not in out and "db " not in out
    assert ifindexes(box, "web") == web and ifindexes(box, "db") == db
    f.write_text(CHANGING.replace("db: {connect: [{network: back}]}",
                                  "db: {connect: [{network: back, ip: 10.71.0.99}]}")
                 % {"extra": ""})
    out = ok(box, "up", str(f))
    assert "change  connection db@back" in out and "remove  node       cache" in out
    assert ifindexes(box, "web") == web
    assert "10.71.0.99/24" in box.inside("db", "ip", "-4", "addr").stdout
    ok(box, "down", str(f))
    assert box.cli("network", "ls", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(("text", "where"), [
    ("name: x\nnetworks:\n  front:\n    subnet: 10.0.0.0/33\n",
     "x.yaml:4: networks.front.subnet: subnet '10.0.0.0/33' is not a CIDR"),
    ("name: x\nnetworks:\n  front:\n    subnt: 10.0.0.0/24\n",
     "x.yaml:4: networks.front.subnt: unknown key (did you mean 'subnet'?)"),
    ("name: x\nnetworks:\n  front: {subnet: yes}\n", "x.yaml:3: networks.front.subnet"),
    ("name: x\nnodes:\n  a:\n  a:\n", "x.yaml:4: nodes.a: appears twice"),
    ("name: x\nnodes:\n  a:\nlinks:\n  - {a: a, b: c, a_ip: 10.0.0.1/30, b_ip: 10.0.0.2/30}\n",
     "x.yaml:5: links[0].b: unknown node 'c'"),
    ("name: x\nnetworks:\n  a: {subnet: 10.0.0.0/16}\n  b: {subnet: 10.0.1.0/24}\n",
     "x.yaml:4: networks.b.subnet: 10.0.1.0/24 overlaps network 'a'"),
    ("name: x\nnodes:\n  a:\n  b:\nlinks:\n  - {a: a, b: b, a_ip: 10.0.0.1/30, "
     "b_ip: 10.0.0.2/30, emulation: {loss: 120%}}\n", "x.yaml:6: links[0].emulation.loss"),
    ("name: x\nnodes:\n  a:\n  b:\nlinks:\n  - {a: a, b: b, a_ip: 10.0.0.1/30, "
     "b_ip: 10.0.0.2/30, emulation: {rate: fast}}\n", "x.yaml:6: links[0].emulation.rate"),
    ("name: x\nnodes:\n  a: {connect: [{network: nope}]}\n",
     "x.yaml:3: nodes.a.connect[0].network: unknown network 'nope'"),
    ("name: x\nnodes: [1, 2]\n", "x.yaml:2: nodes: expected a mapping"),
])
def test_bad_files_name_file_line_field_and_change_nothing(sandbox, tmp_path, text: str,
                                                         where: str) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(text)
    before = sandbox.fingerprint()
    proc = subprocess.run([*sandbox.cli_argv(), "up", str(f)], env=sandbox.env(),
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert where in proc.stderr.replace(str(tmp_path) + "/", ""), proc.stderr
    assert sandbox.fingerprint() == before


LINKED = """
name: wire
nodes:
  left:
  right:
links:
  - a: left
    b: right
    a_ip: 10.99.0.1/30
    b_ip: 10.99.0.2/30
    emulation:
      %s
"""


def test_rate_emulation_with_real_tcp(sandbox, tmp_path) -> None:
    if not shutil.which("iperf3") and not os.environ.get("CI"):
        pytest.skip("iperf3 not installed (make test installs it)")
    f = tmp_path / "wire.yaml"
    f.write_text(LINKED % "rate: 10mbit")
    ok(sandbox, "up", str(f))
    server = subprocess.Popen(["nsenter", f"--net={sandbox.netns_dir}/right", "iperf3", "-s",
                               "-1", "-B", "10.99.0.2"], stdout=subprocess.DEVNULL)
    try:
        import time

        time.sleep(0.5)
        out = sandbox.inside("left", "iperf3", "-c", "10.99.0.2", "-t", "4", "-J").stdout
        bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    finally:
        server.kill()
        server.wait()
    assert 8.5e6 <= bps <= 11.5e6, bps  # 10 Mbit/s +-15%


def test_loss_emulation_with_real_packets(sandbox, tmp_path) -> None:
    f = tmp_path / "wire.yaml"
    f.write_text(LINKED % "a_to_b: {loss: 10%}")
    ok(sandbox, "up", str(f))
    n = 2000
    out = sandbox.inside("left", "ping", "-q", "-c", str(n), "-i", "0.002", "-W", "1",
                         "10.99.0.2", check=False).stdout
    received = int(re.search(r"(\d+) received", out).group(1))
    lost = (n - received) / n
    # binomial(2000, 0.1): sd = 0.0067; 5 sd either side is a sound tolerance
    assert 0.1 - 5 * 0.0067 <= lost <= 0.1 + 5 * 0.0067, (lost, out)
    ok(sandbox, "down", str(f))


def test_delay_is_refused_clearly_on_a_kernel_without_netem(sandbox, tmp_path) -> None:
    from nsnet import kernel

    if kernel.has_netem():
        pytest.skip("this kernel has netem")
    f = tmp_path / "wire.yaml"
    f.write_text(LINKED % "delay: 50ms")
    before = sandbox.fingerprint()
    proc = sandbox.cli("up", str(f))
    assert proc.returncode == 8 and "CONFIG_NET_SCH_NETEM" in proc.stderr
    assert sandbox.fingerprint() == before


def test_graph_of_the_lab(sandbox, tmp_path) -> None:
    box = sandbox
    lab = str(EXAMPLES / "article-lab.yaml")
    ok(box, "up", lab)
    for suffix in ("dot", "mmd") + (("svg", "png") if shutil.which("dot") else ()):
        out = tmp_path / f"lab.{suffix}"
        ok(box, "graph", lab, "-o", str(out))
        assert out.stat().st_size > 0
    text = (tmp_path / "lab.svg" if shutil.which("dot") else tmp_path / "lab.dot").read_text()
    for word in ("ns1", "ns2", "mydocker0", "veth1", "veth2", "eth0", "172.16.1.1/16",
                 "172.16.1.2/16",
                 "172.16.1.254/16"):
        assert word in text, word


def test_python_topology_api(sandbox) -> None:
    import nsnet

    eng = sandbox.engine()
    with nsnet.Topology("code", engine=eng) as topo:
        topo.network("lan", "10.60.0.0/24")
        topo.node("pa", "lan")
        topo.node("pb", "lan")
        topo.link("pa", "pb", "10.61.0.1/30", "10.61.0.2/30", rate="50mbit")
        topo.up()
        assert topo["pa"].exec(["ping", "-c1", "-W2", "10.60.0.3"]).returncode == 0
        assert topo["pa"].exec(["ping", "-c1", "-W2", "10.61.0.2"]).returncode == 0
    assert eng.networks() == [] and not eng.store.topology_objects()
    with pytest.raises(RuntimeError), nsnet.Topology("boom", engine=eng) as topo:
        topo.network("lan2", "10.62.0.0/24")
        topo.node("pc", "lan2")
        topo.up()
        raise RuntimeError("a test failing half-way")
    assert eng.networks() == []  # taken down anyway




def test_router_line_routes_end_to_end(sandbox) -> None:
    ok(sandbox, "up", str(EXAMPLES / "router-line.yaml"))
    out = sandbox.inside("r1", "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.45.2",
                         check=False)
    assert out.returncode == 0, out.stdout
    assert "ttl=61" in out.stdout  # three routers on the way
    ok(sandbox, "down", str(EXAMPLES / "router-line.yaml"))


def test_three_tier_isolation(sandbox) -> None:
    """Each tier reaches its neighbours on the networks they share, and
    nothing on a network it is not on -- addresses read from nsnet, each
    probe from another namespace than the target's (never a self-ping)."""
    box = sandbox
    ok(box, "up", str(EXAMPLES / "three-tier.yaml"))
    nets = json.loads(ok(box, "network", "ls", "--json"))
    addr = {(n["name"], e["netns"]): e["address"].split("/")[0]
            for n in nets for e in n["endpoints"]}
    own = {ns: {ip for (_, n), ip in addr.items() if n == ns} for _, ns in addr}

    def reach(src: str, net: str, dst: str) -> bool:
        ip = addr[(net, dst)]
        assert src != dst and ip not in own[src], (src, ip)  # a probe that can fail
        return box.inside(src, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0

    allowed = [("web1", "back", "web2"), ("web1", "back", "app"), ("app", "back", "web2"),
               ("web1", "front", "lb"), ("lb", "front", "web2"), ("app", "data", "db"),
               ("db", "data", "app")]
    denied = [("web1", "data", "db"), ("lb", "data", "db"), ("lb", "back", "app"),
              ("db", "back", "web1"), ("db", "front", "lb"), ("app", "front", "web1"),
              ("lb", "back", "web1")]
    assert [p for p in allowed if not reach(*p)] == []
    assert [p for p in denied if reach(*p)] == []
    ok(box, "down", str(EXAMPLES / "three-tier.yaml"))


def test_changing_a_network_remakes_its_connections(sandbox, tmp_path) -> None:
    f = tmp_path / "n.yaml"
    base = ("name: n\nnetworks:\n  lan: {subnet: 10.72.0.0/24%s}\n"
            "nodes:\n  a: {connect: [{network: lan}]}\n")
    f.write_text(base % "")
    ok(sandbox, "up", str(f))
    f.write_text(base % ", mtu: 1400")
    out = ok(sandbox, "up", str(f))
    assert "change  network    lan" in out and "change  connection a@lan" in out
    assert "mtu 1400" in sandbox.inside("a", "ip", "link", "show", "eth0").stdout
    assert "as the file says" in ok(sandbox, "status", str(f))
    ok(sandbox, "down", str(f))


def test_nsnet_lab_is_up_of_the_example_plus_pings(sandbox) -> None:
    box = sandbox
    lab = str(EXAMPLES / "article-lab.yaml")
    assert "The lab is up" in ok(box, "lab")
    assert "as the file says" in ok(box, "status", lab)
    assert "nothing changed" in ok(box, "up", lab)
    ok(box, "down", lab)
    assert box.cli("network", "ls", "--json").stdout.strip() == "[]"
    ok(box, "up", lab)  # and the other way round
    assert "already up" in ok(box, "lab")
    ok(box, "lab", "--down")
    assert "is not up" in box.cli("status", lab).stdout + box.cli("down", lab).stderr


SMALL = """
name: small
networks:
  lan: {subnet: 10.73.0.0/24}
nodes:
  s1: {connect: [{network: lan}], routes: [{dst: 10.74.0.0/24, via: 10.75.0.2}]}
  s2: {connect: [{network: lan}]}
links:
  - {a: s1, b: s2, a_ip: 10.75.0.1/30, b_ip: 10.75.0.2/30}
"""


def test_deleted_behind_its_back_is_seen_and_remade(sandbox, tmp_path) -> None:
    f = tmp_path / "small.yaml"
    f.write_text(SMALL)
    ok(sandbox, "up", str(f))
    sandbox.inside("s1", "ip", "link", "del", "to-s2")  # the link and, with it, the route
    out = sandbox.cli("status", str(f))
    assert out.returncode == 1 and "recorded but missing" in out.stdout
    assert "create  link" in ok(sandbox, "up", str(f))
    assert "as the file says" in ok(sandbox, "status", str(f))
    ok(sandbox, "down", str(f))


KILLED = SMALL.replace("b_ip: 10.75.0.2/30}", "b_ip: 10.75.0.2/30,\n"
                      "     emulation: {a_to_b: {rate: 10mbit, loss: 0.5%}, "
                      "b_to_a: {rate: 20mbit}}}")
# Every crash point `up KILLED` passes, in order: the parametrization below
# tries each one (test_up_crash_points_are_these fails when this list is stale).
UP_POINTS = ["topology:removed", "topology:recorded", "network_create:journaled",
             "bridge:created", "bridge:configured", "network_create:firewall",
             "network_create:committed", "connect:journaled", "netns:created", "netns:created",
             "connect:veths", "connect:host-up", "connect:inside", "connect:inside",
             "connect:applied", "connect:committed", "dns:signalled", "topology:forwarding",
             "topology:forwarding", "link_add:journaled", "topology:link-veth",
             "topology:link-addresses",
             "topology:link-rate", "topology:link-rate", "topology:link-marked",
             "topology:route", "topology:loss-node", "topology:loss-node", "topology:loss"]


def _up_killed_at(sandbox, f, point: int | None, log: str) -> subprocess.CompletedProcess:
    env = sandbox.env() | {"NSNET_CRASH_LOG": log}
    if point:
        env["NSNET_CRASH_AT"] = str(point)
    return subprocess.run([*sandbox.cli_argv(), "up", str(f)], env=env, capture_output=True,
                          text=True)


def _assert_killed_topology_works(sandbox) -> None:
    assert sandbox.inside("s1", "ping", "-c3", "-i0.2", "-W2", "10.75.0.2",
                          check=False).returncode == 0
    for node, ifname in (("s1", "to-s2"), ("s2", "to-s1")):
        assert "tbf" in sandbox.inside(node, "tc", "qdisc", "show", "dev", ifname).stdout
    assert "numgen random" in sandbox.inside("s1", "nft", "list", "table", "inet",
                                             "nsnet_emu").stdout
    assert "10.74.0.0/24 via 10.75.0.2" in sandbox.inside("s1", "ip", "route").stdout


def _assert_nothing_left(sandbox) -> None:
    assert sandbox.cli("network", "ls", "--json").stdout.strip() == "[]"
    assert sandbox.cli("ns", "ls", "--json").stdout.strip() == "[]"
    assert sorted(os.listdir(sandbox.netns_dir)) == []
    links = json.loads(sandbox.host("ip", "-j", "link").stdout)
    assert [lk["ifname"] for lk in links] == ["lo"]
    assert sandbox.host("nft", "list", "tables").stdout.strip() == ""
    left = [os.path.join(d, f) for d, _, fs in os.walk(sandbox.etc_dir) for f in fs] \
        if os.path.isdir(sandbox.etc_dir) else []
    assert left == []  # no resolv.conf left


def test_up_crash_points_are_these(sandbox, tmp_path) -> None:
    f = tmp_path / "killed.yaml"
    f.write_text(KILLED)
    log = str(tmp_path / "points.log")
    assert _up_killed_at(sandbox, f, None, log).returncode == 0
    with open(log) as fh:
        assert [line.split()[1] for line in fh] == UP_POINTS
    _assert_killed_topology_works(sandbox)
    ok(sandbox, "down", str(f))
    _assert_nothing_left(sandbox)


@pytest.mark.parametrize("point", range(1, len(UP_POINTS) + 1))
def test_killed_up_is_finished_by_the_next_up(sandbox, tmp_path, point: int) -> None:
    """SIGKILL at every crash point of an `up` with a link, a route and
    emulation: the next `up` finishes it exactly, `down` leaves nothing."""
    f = tmp_path / "killed.yaml"
    f.write_text(KILLED)
    log = str(tmp_path / "points.log")
    res = _up_killed_at(sandbox, f, point, log)
    assert res.returncode == -9, f"crash point {point} not reached: {res.returncode}"
    with open(log) as fh:
        assert fh.read().split()[-1] == UP_POINTS[point - 1]
    ok(sandbox, "up", str(f))  # carries on: nothing is left unowned
    assert "as the file says" in ok(sandbox, "status", str(f))
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    _assert_killed_topology_works(sandbox)
    ok(sandbox, "down", str(f))
    _assert_nothing_left(sandbox)



# ------------------------------------------ README promises (issue #13, CLI/topology)
def _changes(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"^(create|remove|change) ", line)]


def test_up_dry_run_prints_the_plan_and_changes_nothing(sandbox, tmp_path) -> None:
    f = tmp_path / "small.yaml"
    f.write_text(SMALL)
    before = sandbox.fingerprint()
    plan = ok(sandbox, "up", "--dry-run", str(f))
    assert sandbox.fingerprint() == before
    assert not os.path.exists(os.path.join(sandbox.netns_dir, "s1"))
    want = _changes(plan)
    assert {" ".join(c.split()[:3]) for c in want} >= {
        "create network lan", "create node s1", "create node s2"}, plan
    assert any(c.startswith("create  link") for c in want), plan
    assert plan.strip().endswith(f"small: {len(want)} change(s)")
    assert _changes(ok(sandbox, "up", str(f))) == want  # the plan is what up then does
    assert ok(sandbox, "up", "--dry-run", str(f)).strip() == \
        "small: up to date, nothing changed"
    f.write_text(SMALL.replace("links:", "  s3: {connect: [{network: lan}]}\nlinks:"))
    up = sandbox.fingerprint()
    plan = _changes(ok(sandbox, "up", "--dry-run", str(f)))
    assert sandbox.fingerprint() == up
    assert plan and all(c.startswith("create") and "s3" in c for c in plan), plan
    assert not any(re.search(r"\bs[12]\b", c) for c in plan), plan
    ok(sandbox, "down", str(f))


def test_graph_live_draws_every_network_and_link(sandbox, tmp_path) -> None:
    f = tmp_path / "small.yaml"
    f.write_text(SMALL)
    ok(sandbox, "up", str(f))
    ok(sandbox, "network", "create", "solo", "--subnet", "10.76.0.0/24", "--bridge", "solobr")
    ok(sandbox, "connect", "solo", "lone", "--create")
    live, mine = tmp_path / "live.dot", tmp_path / "small.dot"
    assert ok(sandbox, "graph", "--live", "-o", str(live)).strip() == str(live)
    ok(sandbox, "graph", str(f), "-o", str(mine))
    text, only = live.read_text(), mine.read_text()
    for word in ("s1", "s2", "10.73.0.1/24", "10.75.0.1/30 - ", "lone", "solobr",
                 "bridge of solo", "10.76.0.2/24"):
        assert word in text, word
    assert "lone" not in only and "solobr" not in only and "10.75.0.1/30" in only
    res = sandbox.cli("graph", "-o", str(tmp_path / "x.dot"))
    assert res.returncode == 2 and "give a topology FILE or --live" in res.stderr
    ok(sandbox, "down", str(f))
    ok(sandbox, "network", "rm", "solo", "--force")
    ok(sandbox, "ns", "rm", "lone")


@pytest.mark.parametrize("squatter", ["network", "nsnet-namespace", "foreign-namespace",
                                      "other-topology"])
def test_same_named_objects_the_topology_does_not_own_are_refused(sandbox, tmp_path,
                                                                  squatter) -> None:
    f = tmp_path / "small.yaml"
    f.write_text(SMALL)
    if squatter == "network":
        ok(sandbox, "network", "create", "lan", "--subnet", "10.77.0.0/24")
        message = "network 'lan' exists and was not made by topology 'small'"
    elif squatter == "nsnet-namespace":
        ok(sandbox, "ns", "add", "s2")
        message = "namespace 's2' exists and was not made by topology 'small'"
    elif squatter == "foreign-namespace":
        sandbox.foreign_netns("s1")
        message = "namespace 's1' exists and was not made by topology 'small'"
    else:
        other = tmp_path / "other.yaml"
        other.write_text("name: other\nnetworks:\n  lan: {subnet: 10.78.0.0/24}\n")
        ok(sandbox, "up", str(other))
        message = "network 'lan' belongs to topology 'other'"
    before = sandbox.fingerprint()
    res = sandbox.cli("up", str(f))
    err = res.stderr.strip()
    assert res.returncode == 5 and len(err.splitlines()) == 1 and message in err, err
    assert err.startswith(f"nsnet: error: {f}: ")
    assert sandbox.fingerprint() == before  # nothing taken over, nothing made
    res = sandbox.cli("down", str(f))  # small owns nothing: removes nothing
    assert res.returncode == 3 and "topology 'small' is not up" in res.stderr, res.stderr
    assert sandbox.fingerprint() == before


ONE_WAY = """
import socket, sys, time
mode, ip, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == "recv":
    s.bind((ip, 9999)); s.settimeout(3); got = 0
    print("ready", flush=True)
    try:
        while True:
            s.recv(64); got += 1; s.settimeout(1)
    except OSError:
        pass
    print(got, flush=True)
else:
    for i in range(n):
        try:
            s.sendto(b"x" * 32, (ip, 9999))
        except PermissionError:  # dropped by the sender's own output hook (the loss rule)
            pass
        if i % 50 == 49: time.sleep(0.005)
"""


def _one_way(box, src: str, dst: str, dst_ip: str, n: int) -> int:
    """Datagrams sent from src that reached dst: one direction only."""
    import sys

    recv = subprocess.Popen(["nsenter", f"--net={box.netns_dir}/{dst}", sys.executable, "-c",
                             ONE_WAY, "recv", dst_ip, "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout and recv.stdout.readline().strip() == "ready"
        box.inside(src, sys.executable, "-c", ONE_WAY, "send", dst_ip, str(n))
        return int(recv.communicate(timeout=30)[0].strip())
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()


def test_b_to_a_emulation_shapes_only_that_direction(sandbox, tmp_path) -> None:
    """README: emulation applies to both directions, or to a_to_b / b_to_a
    only.  b_to_a loss 30% (right -> left): measured one way at a time."""
    f = tmp_path / "wire.yaml"
    f.write_text(LINKED % "b_to_a: {loss: 30%}")
    ok(sandbox, "up", str(f))
    n = 2000
    a_to_b = _one_way(sandbox, "left", "right", "10.99.0.2", n)
    b_to_a = _one_way(sandbox, "right", "left", "10.99.0.1", n)
    assert a_to_b >= n * 0.99, a_to_b  # untouched direction
    # binomial(2000, 0.3): sd = 20.5 datagrams; 5 sd either side
    assert abs(b_to_a - n * 0.7) <= 5 * 20.5, b_to_a
    f.write_text(LINKED % "a_to_b: {loss: 30%}")  # and the mirror image, after a change
    ok(sandbox, "up", str(f))
    assert abs(_one_way(sandbox, "left", "right", "10.99.0.2", n) - n * 0.7) <= 5 * 20.5
    assert _one_way(sandbox, "right", "left", "10.99.0.1", n) >= n * 0.99
    ok(sandbox, "down", str(f))
