"""Embedded DNS (issue #6): resolution through the normal resolver path
(getaddrinfo and getent run with ``nsnet ns exec``, dig), scoping,
forwarding, failures.  The README's "Embedded DNS" promises and their tests
(here unless named; the attacks are in tests/security/test_dns_*.py):

* starts with the first endpoint, stops with the last: test_server_stops_when_no_endpoint_wants_it
* restarted by reconcile: test_killed_server_is_restarted_by_reconcile
* isolated from the caller's environment: security/test_dns_spawn.py
* gateways only, never an open resolver: test_never_an_open_resolver
* resolv.conf per namespace, a foreign one never overwritten:
  test_never_overwrites_a_resolv_conf_it_did_not_write (and the ``lan`` fixture)
* names, aliases, PTR, per-network scope, NXDOMAIN, case: test_names_aliases_ptr_scope_and_nxdomain
* NODATA for other types: test_names_aliases_ptr_scope_and_nxdomain
* a shared alias returns all its endpoints: test_shared_alias_returns_every_endpoint
* TTL 5 s: test_answers_live_five_seconds
* forwarding to --dns, dead upstream SERVFAIL ~1.5 s: test_forwarding_and_a_dead_upstream
* forwarding through the host namespace's resolv.conf: test_forwarding_through_the_host_resolv_conf
* UDP then TCP when truncated: test_truncated_upstream_answer_is_asked_again_over_tcp
* --internal never forwards: test_internal_network_answers_its_names_and_forwards_nothing,
  security/test_dns_internal.py
* FORMERR for impossible names, always an answer: security/test_dns_names.py,
  test_malformed_packets_never_kill_the_server
* bounded TCP, UDP answering under a flood: security/test_dns_tcp.py
* changes visible at once, no query dropped: test_changes_are_visible_at_once,
  test_no_query_dropped_while_names_change
* port 53 taken: test_port_53_taken_names_the_network_and_others_work
* 10,000 names: test_ten_thousand_names
* at most 256 forwards in flight, more REFUSED: test_at_most_256_forwards_in_flight_then_refused
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dnstools
from world import HOST_IP, OUT_IP, World

DNSTOOLS = str(Path(__file__).parent.parent / "dnstools.py")
RESOLVE = ("import socket, sys\n"
           "try:\n"
           "    print(socket.gethostbyname(sys.argv[1]))\n"
           "except OSError as e:\n"
           "    print('ERR', e.__class__.__name__); sys.exit(1)\n")
REVERSE = ("import socket, sys\n"
           "try:\n"
           "    print(socket.gethostbyaddr(sys.argv[1])[0])\n"
           "except OSError as e:\n"
           "    print('ERR', e.__class__.__name__); sys.exit(1)\n")


def resolve(world: World, ns: str, name: str, code: str = RESOLVE) -> str:
    proc = world.box.cli("ns", "exec", ns, "--", sys.executable, "-c", code, name)
    return proc.stdout.strip()


def ask(world: World, ns: str, server: str, name: str, qtype: str = "A", tcp: bool = False):
    path = os.path.join(world.box.netns_dir, ns)
    argv = ["nsenter", f"--net={path}", sys.executable, DNSTOOLS, "ask", server, name, qtype]
    out = subprocess.run(argv + (["tcp"] if tcp else []), capture_output=True, text=True)
    return out.stdout.strip()


def start_upstream(world: World, log: str | None = None) -> None:
    """The fake upstream (tests/dnstools.py) at OUT_IP, in the outside
    namespace; with ``log``, every query it gets is recorded there."""
    world.servers.append(dnstools.start_upstream(world.out_path, OUT_IP, log))


def dig(world: World, ns: str, *args: str) -> dict:
    return dnstools.dig(os.path.join(world.box.netns_dir, ns), *args)


def getent(world: World, ns: str, name: str) -> set[str]:
    """The IPv4 addresses glibc resolves ``name`` to, in ``ns``, with the
    namespace's /etc/netns resolv.conf in place (``nsnet ns exec`` does as
    ``ip netns exec``)."""
    proc = world.box.cli("ns", "exec", ns, "--", "getent", "ahostsv4", name)
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


@pytest.fixture
def lan(world: World) -> World:
    """front (10.90.0.0/24, upstream = the outside fake) with web (aliases www,
    api) and cli; back (10.91.0.0/24) with db."""
    box = world.box
    start_upstream(world)
    world.ok("network", "create", "front", "--subnet", "10.90.0.0/24", "--dns", OUT_IP)
    world.ok("network", "create", "back", "--subnet", "10.91.0.0/24")
    world.ok("connect", "front", "web", "--create", "--alias", "www", "--alias", "api")
    world.ok("connect", "front", "cli", "--create")
    world.ok("connect", "back", "db", "--create")
    assert os.path.exists(os.path.join(box.etc_dir, "cli", "resolv.conf"))
    return world


def test_names_aliases_ptr_scope_and_nxdomain(lan: World) -> None:
    assert resolve(lan, "cli", "web") == "10.90.0.2"
    assert resolve(lan, "cli", "www") == "10.90.0.2"
    assert resolve(lan, "cli", "API") == "10.90.0.2"  # names are case-insensitive
    assert resolve(lan, "cli", "cli") == "10.90.0.3"
    assert resolve(lan, "cli", "10.90.0.2", REVERSE) == "web"
    assert resolve(lan, "cli", "db").startswith("ERR")  # another network's name
    assert resolve(lan, "db", "web").startswith("ERR")
    assert resolve(lan, "db", "db") == "10.91.0.2"
    assert ask(lan, "cli", "10.90.0.1", "nosuchname").startswith("NXDOMAIN")
    for qtype in ("AAAA", "MX", "TXT"):  # the name exists, not with that type: NODATA
        assert dnstools.is_nodata(dig(lan, "cli", "@10.90.0.1", "web", qtype)), qtype
        assert dnstools.is_nodata(dig(lan, "cli", "@10.90.0.1", "+tcp", "www", qtype)), qtype
    assert not dnstools.is_nodata(dig(lan, "cli", "@10.90.0.1", "web", "A"))  # (the check can fail)
    assert not dnstools.is_nodata(dig(lan, "cli", "@10.90.0.1", "nosuchname", "AAAA"))
    assert ask(lan, "cli", "10.90.0.1", "web", tcp=True).startswith("NOERROR 10.90.0.2")


def test_forwarding_and_a_dead_upstream(lan: World) -> None:
    assert resolve(lan, "cli", "example.test") == "203.0.113.7"
    assert ask(lan, "cli", "10.90.0.1", "x.test", tcp=True).startswith("NOERROR 203.0.113.7")
    lan.ok("network", "create", "dead", "--subnet", "10.92.0.0/24", "--dns", "198.51.100.99")
    lan.ok("connect", "dead", "lone", "--create")
    out = ask(lan, "lone", "10.92.0.1", "example.test")
    assert out.startswith("SERVFAIL"), out
    assert float(out.split()[-1].rstrip("s")) < 2.0


def test_changes_are_visible_at_once(lan: World) -> None:
    lan.ok("connect", "front", "late", "--create", "--alias", "newcomer")
    assert resolve(lan, "cli", "late") == "10.90.0.4"
    assert resolve(lan, "cli", "newcomer") == "10.90.0.4"
    lan.ok("disconnect", "front", "late")
    assert ask(lan, "cli", "10.90.0.1", "late").startswith("NXDOMAIN")


def test_never_an_open_resolver(lan: World) -> None:
    lan.out("ip", "route", "add", "10.90.0.0/24", "via", HOST_IP)
    out = subprocess.run(["nsenter", f"--net={lan.out_path}", sys.executable, DNSTOOLS, "ask",
                          "10.90.0.1", "web"], capture_output=True, text=True).stdout
    assert out.startswith("REFUSED"), out
    # and it listens on the gateways only
    listening = lan.box.host("ss", "-lnuH").stdout
    assert ":53 " in listening and f"{HOST_IP}:53" not in listening
    assert "0.0.0.0:53" not in listening


def test_port_53_taken_names_the_network_and_others_work(lan: World) -> None:
    box = lan.box
    lan.ok("network", "create", "taken", "--subnet", "10.93.0.0/24")
    squatter = subprocess.Popen(["nsenter", f"--net={box.host_path}", sys.executable, "-c",
                                 "import socket,time; s=socket.socket(socket.AF_INET, "
                                 "socket.SOCK_DGRAM); s.bind(('10.93.0.1', 53)); "
                                 "print('ready', flush=True); time.sleep(600)"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout and squatter.stdout.readline().strip() == "ready"
        proc = box.cli("connect", "taken", "t1", "--create")
        assert proc.returncode == 0
        assert "embedded DNS cannot serve network 'taken'" in proc.stderr
        assert "Address already in use" in proc.stderr
        assert resolve(lan, "cli", "web") == "10.90.0.2"
        dry = box.cli("reconcile", "--dry-run")
        assert "dns taken" in dry.stdout
    finally:
        squatter.kill()
        squatter.wait()
    lan.ok("reconcile")
    assert ask(lan, "t1", "10.93.0.1", "t1").startswith("NOERROR 10.93.0.2")
    assert box.cli("reconcile", "--dry-run").returncode == 0


def test_killed_server_is_restarted_by_reconcile(lan: World) -> None:
    box = lan.box
    status = json.loads(Path(box.state_dir, "dns.status.json").read_text())
    os.kill(status["pid"], signal.SIGKILL)  # our own server, by its recorded PID
    time.sleep(0.2)
    dry = box.cli("reconcile", "--dry-run")
    assert dry.returncode == 1 and "DNS server is not running" in dry.stdout
    lan.ok("reconcile")
    assert resolve(lan, "cli", "web") == "10.90.0.2"
    assert box.cli("reconcile", "--dry-run").returncode == 0


def test_server_stops_when_no_endpoint_wants_it(lan: World) -> None:
    box = lan.box
    pid = json.loads(Path(box.state_dir, "dns.status.json").read_text())["pid"]
    lan.ok("network", "rm", "--force", "front", "back")
    stat = Path(f"/proc/{pid}/stat")
    end = time.monotonic() + 6  # it lingers ~2 s (a runtime may add the next container)
    while stat.exists() and stat.read_text().split()[2] != "Z" and time.monotonic() < end:
        time.sleep(0.02)
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
    assert not os.listdir(box.etc_dir)  # resolv.conf files went with their endpoints


_GARBAGE = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda q, cut: q[:cut], st.just(
        bytes.fromhex("abcd01000001000000000000037765620000010001")), st.integers(0, 20)),
    st.builds(lambda flip, pos: bytearray(
        bytes.fromhex("abcd01000001000000000000037765620000010001"))[:pos] + bytes([flip]),
        st.integers(0, 255), st.integers(0, 20)),
)


def test_malformed_packets_never_kill_the_server(lan: World) -> None:
    from nsnet.kernel import entered

    fd = os.open(os.path.join(lan.box.netns_dir, "cli"), os.O_RDONLY)
    try:
        with entered(fd):  # sockets opened here live in "cli"
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

            def tcp() -> socket.socket:
                with entered(fd):
                    return socket.create_connection(("10.90.0.1", 53), timeout=1)

        @settings(max_examples=int(os.environ.get("NSNET_FUZZ_EXAMPLES", "300")),
                  deadline=None, suppress_health_check=list(HealthCheck))
        @given(_GARBAGE, st.booleans())
        def blast(data: bytes, over_tcp: bool) -> None:
            if over_tcp:
                with tcp() as c:
                    c.sendall(len(data).to_bytes(2, "big") + bytes(data[:-1]))
            else:
                udp.sendto(bytes(data), ("10.90.0.1", 53))

        blast()
        udp.sendto(b"\0" * 65000, ("10.90.0.1", 53))  # oversized
        with tcp() as c:
            c.sendall(b"\xff\xff" + b"x" * 100)  # claims more than it sends
        udp.close()
    finally:
        os.close(fd)
    assert ask(lan, "cli", "10.90.0.1", "web").startswith("NOERROR 10.90.0.2")


def test_ten_thousand_names(sandbox) -> None:
    from nsnet import ConnectOptions, NetworkSpec

    eng = sandbox.engine()
    eng.network_create(NetworkSpec("big", "10.94.0.0/24"))
    for i in range(10):
        names = tuple(f"n{i}-{j}" for j in range(1000))
        eng.connect("big", [f"host{i}"], ConnectOptions(create=True, aliases=names))
    path = os.path.join(sandbox.netns_dir, "host0")
    for name, ip in (("n0-0", "10.94.0.2"), ("n9-999", "10.94.0.11"), ("n4-517", "10.94.0.6")):
        out = subprocess.run(["nsenter", f"--net={path}", sys.executable, DNSTOOLS, "ask",
                              "10.94.0.1", name], capture_output=True, text=True).stdout
        assert out.startswith(f"NOERROR {ip}"), out


_HAMMER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\\x03web\\x00\\x00\\x01\\x00\\x01"
bad = 0
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    n += 1
    s.sendto(q, ("10.90.0.1", 53))
    try:
        r = s.recv(512)
        if r[3] & 0x0F or r[6:8] == b"\\0\\0":
            bad += 1
    except OSError:
        bad += 1
print(n, bad)
"""


def test_no_query_dropped_while_names_change(lan: World) -> None:
    path = os.path.join(lan.box.netns_dir, "cli")
    hammer = subprocess.Popen(["nsenter", f"--net={path}", sys.executable, "-c", _HAMMER, "4"],
                              stdout=subprocess.PIPE, text=True)
    lan.servers.append(hammer)
    for i in range(3):  # the server reloads under the queries' feet
        lan.ok("connect", "front", f"churn{i}", "--create", "--alias", f"c{i}")
        lan.ok("disconnect", "front", f"churn{i}")
    out, _ = hammer.communicate(timeout=30)
    sent, bad = map(int, out.split())
    assert sent > 100 and bad == 0, (sent, bad)


def test_answers_live_five_seconds(lan: World) -> None:
    """README: TTL 5 s, for names, aliases and PTR."""
    for args in (("web",), ("api",), ("-x", "10.90.0.2")):
        msg = dig(lan, "cli", "@10.90.0.1", *args)
        assert msg["status"] == "NOERROR" and msg["ANSWER"], msg["raw"]
        assert {int(rr[1]) for rr in msg["ANSWER"]} == {5}, msg["raw"]


def test_shared_alias_returns_every_endpoint(lan: World) -> None:
    lan.ok("connect", "front", "a1", "--create", "--alias", "pool")
    lan.ok("connect", "front", "a2", "--create", "--alias", "pool")
    members = {"10.90.0.4", "10.90.0.5"}
    msg = dig(lan, "cli", "@10.90.0.1", "pool")
    assert {rr[4] for rr in msg["ANSWER"] if rr[3] == "A"} == members, msg["raw"]
    assert getent(lan, "cli", "pool") == members
    lan.ok("disconnect", "front", "a1")
    assert getent(lan, "cli", "pool") == {"10.90.0.5"}


def test_truncated_upstream_answer_is_asked_again_over_tcp(world: World, tmp_path: Path) -> None:
    """README: "UDP then TCP when truncated".  The upstream truncates
    big.test (40 records) over UDP and answers it whole over TCP: a UDP
    client gets the truncated answer (and retries over TCP, as glibc and
    dig do), a TCP client gets all 40 -- nsnet asked UDP first, then TCP."""
    log = tmp_path / "upstream.log"
    start_upstream(world, str(log))
    world.ok("network", "create", "front", "--subnet", "10.90.0.0/24", "--dns", OUT_IP)
    world.ok("connect", "front", "cli", "--create")
    big = {f"203.0.113.{i}" for i in range(1, 41)}
    udp_only = dig(world, "cli", "@10.90.0.1", "+ignore", "+noedns", "big.test")
    assert "tc" in udp_only["flags"] and not udp_only["ANSWER"], udp_only["raw"]
    log.write_text("")
    assert getent(world, "cli", "big.test") == big  # glibc: UDP, TC, then TCP
    # glibc's UDP query (nsnet: UDP, passes the TC on), then its TCP one (UDP, TC, TCP)
    assert log.read_text().splitlines() == ["udp big.test", "udp big.test", "tcp big.test"]
    msg = dig(world, "cli", "@10.90.0.1", "+tcp", "big.test")
    assert {rr[4] for rr in msg["ANSWER"]} == big, msg["raw"]


def test_forwarding_through_the_host_resolv_conf(world: World, tmp_path: Path) -> None:
    """README: names not on the network, on a network without --dns, go to
    the host namespace's resolv.conf as ``ip netns exec HOST`` shows it --
    here the sandbox host's /etc/netns/host/resolv.conf naming the outside
    namespace's server (the machine's own /etc/resolv.conf is not touched)."""
    log = tmp_path / "upstream.log"
    start_upstream(world, str(log))
    host_etc = Path(world.box.etc_dir, os.path.basename(world.box.host_path))
    host_etc.mkdir(parents=True)
    (host_etc / "resolv.conf").write_text(f"nameserver {OUT_IP}\n")
    world.ok("network", "create", "plain", "--subnet", "10.95.0.0/24")
    world.ok("connect", "plain", "cli", "--create")
    assert getent(world, "cli", "example.test") == {"203.0.113.7"}
    assert "udp example.test" in log.read_text().splitlines()
    msg = dig(world, "cli", "@10.95.0.1", "nosuch.example")
    assert msg["status"] == "NXDOMAIN", msg["raw"]  # the upstream's own answer, passed on
    assert "udp nosuch.example" in log.read_text().splitlines()


def test_never_overwrites_a_resolv_conf_it_did_not_write(lan: World) -> None:
    """A namespace whose /etc/netns/NS/resolv.conf someone else wrote keeps
    it, byte for byte, through connect, reconcile and disconnect."""
    mine = "# written by the admin\nnameserver 192.0.2.53\n"
    folder = Path(lan.box.etc_dir, "own")
    folder.mkdir()
    (folder / "resolv.conf").write_text(mine)
    lan.ok("connect", "front", "own", "--create")
    assert (folder / "resolv.conf").read_text() == mine
    lan.ok("reconcile")
    assert (folder / "resolv.conf").read_text() == mine
    lan.ok("disconnect", "front", "own")
    assert (folder / "resolv.conf").read_text() == mine
    # while nsnet's own file in the same situation is written and removed
    assert Path(lan.box.etc_dir, "cli", "resolv.conf").read_text().startswith("# nsnet")


def test_internal_network_answers_its_names_and_forwards_nothing(world: World,
                                                                 tmp_path: Path) -> None:
    """An --internal network's DNS answers its own names; any other name
    gets SERVFAIL at once (as Docker's embedded DNS since CVE-2024-29018)
    and never reaches an upstream -- even one named with --dns."""
    log = tmp_path / "upstream.log"
    start_upstream(world, str(log))
    world.ok("network", "create", "sealed", "--subnet", "10.96.0.0/24", "--internal",
             "--dns", OUT_IP)
    world.ok("connect", "sealed", "s1", "--create")
    world.ok("connect", "sealed", "s2", "--create")
    assert getent(world, "s1", "s2") == {"10.96.0.3"}
    assert dig(world, "s1", "@10.96.0.1", "nope")["status"] == "NXDOMAIN"
    for args in (("example.test",), ("+tcp", "example.test"), ("-x", "198.51.100.2")):
        msg = dig(world, "s1", "@10.96.0.1", *args)
        assert msg["status"] == "SERVFAIL", msg["raw"]
    assert not log.exists() or log.read_text() == ""


# A fake upstream that reads every query and never answers; it prints each
# name it got on its stdout.
SILENT_UPSTREAM = ("import socket, sys\n"
                   "from dnslib import DNSRecord\n"
                   "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                   # FORCE (root): past rmem_max, so no forwarded query is lost
                   "s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE\n"
                   "s.bind((sys.argv[1], 53))\n"
                   "print('ready', flush=True)\n"
                   "while True:\n"
                   "    data = s.recv(4096)\n"
                   "    try:\n"
                   "        print(str(DNSRecord.parse(data).q.qname), flush=True)\n"
                   "    except Exception:\n"
                   "        print('?', flush=True)\n")

# From an endpoint: COUNT distinct forwarded queries at once on one socket,
# then (another socket) the server's own name; prints JSON of what came back
# and when.
FLOOD = ("import json, socket, sys, time\n"
         "from dnslib import RCODE, DNSRecord\n"
         "server, count, own = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         # FORCE (root): past rmem_max, so 400 answers fit while it waits
         "s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE\n"
         "t0 = time.monotonic()\n"
         "for i in range(count):\n"
         "    q = DNSRecord.question(f'q{i}.test')\n"
         "    q.header.id = i\n"
         "    s.sendto(q.pack(), (server, 53))\n"
         "o = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "o.settimeout(2)\n"
         "t1 = time.monotonic()\n"
         "o.sendto(DNSRecord.question(own).pack(), (server, 53))\n"
         "r = DNSRecord.parse(o.recv(4096))\n"
         "mine = [RCODE.get(r.header.rcode), [str(x.rdata) for x in r.rr],\n"
         "        time.monotonic() - t1]\n"
         "got = {}\n"
         "s.settimeout(0.5)\n"
         "end = time.monotonic() + 6\n"
         "while time.monotonic() < end and len(got) < count:\n"
         "    try:\n"
         "        r = DNSRecord.parse(s.recv(4096))\n"
         "    except TimeoutError:\n"
         "        continue\n"
         "    got[r.header.id] = [RCODE.get(r.header.rcode), time.monotonic() - t0]\n"
         "print(json.dumps({'own': mine, 'replies': got}))\n")


def test_at_most_256_forwards_in_flight_then_refused(world: World) -> None:
    """README: at most 256 forwarded queries in flight, more get REFUSED.
    400 distinct names at once to an upstream that never answers: the
    upstream sees at most 256, the rest are REFUSED at once (not after the
    1.5 s upstream deadline), every query gets an answer, the server keeps
    answering its own names meanwhile, and once the forwards time out the
    next query is forwarded again."""
    box = world.box
    upstream = subprocess.Popen(["nsenter", f"--net={world.out_path}", sys.executable, "-c",
                                 SILENT_UPSTREAM, OUT_IP], stdout=subprocess.PIPE, text=True)
    world.servers.append(upstream)  # stopped by PID with the world
    assert upstream.stdout and upstream.stdout.readline().strip() == "ready"
    world.ok("network", "create", "flood", "--subnet", "10.93.0.0/24", "--dns", OUT_IP)
    world.ok("connect", "flood", "flooder", "--create")
    path = os.path.join(box.netns_dir, "flooder")
    proc = subprocess.run(["nsenter", f"--net={path}", sys.executable, "-c", FLOOD,
                           "10.93.0.1", "400", "flooder"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rcode, addrs, took = out["own"]
    assert (rcode, addrs) == ("NOERROR", ["10.93.0.2"]) and took < 1.0, out["own"]
    replies = out["replies"]
    assert len(replies) == 400  # every query gets an answer
    refused = [t for rc, t in replies.values() if rc == "REFUSED"]
    others = {rc for rc, _ in replies.values() if rc != "REFUSED"}
    assert len(refused) >= 400 - 256, len(refused)
    assert others <= {"SERVFAIL"}, others  # the rest were forwarded, and timed out
    assert len(replies) - len(refused) <= 256
    assert max(refused) < 1.0, max(refused)  # refused at once, not after the deadline
    # the upstream never had more than 256 of them
    upstream.kill()
    upstream.wait()
    seen = {line.strip() for line in upstream.stdout if line.strip()}
    assert 0 < len(seen) <= 256, len(seen)
    # the slots are free again: the next query is forwarded (SERVFAIL, not REFUSED)
    answer = ask(world, "flooder", "10.93.0.1", "after.test")
    assert answer.startswith("SERVFAIL"), answer
