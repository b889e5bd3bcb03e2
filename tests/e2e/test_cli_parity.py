"""Issue #19: the rest of Docker's network vocabulary in nsnet's own CLI,
tried as a Docker user would."""

from __future__ import annotations

import json


def _ports(box) -> list[dict]:
    out = box.cli("port", "ls", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_ephemeral_host_ports(sandbox) -> None:
    box = sandbox
    net, a, b = box.name("pe"), box.name("a"), box.name("b")
    assert box.cli("network", "create", net, "--subnet", "10.60.0.0/24").returncode == 0
    res = box.cli("connect", net, a, "--create", "-p", "80", "-p", "127.0.0.1::53/udp",
                  "-p", "8080:8080")
    assert res.returncode == 0, res.stderr
    low, high = (int(x) for x in box.host("cat", "/proc/sys/net/ipv4/ip_local_port_range")
                 .stdout.split())
    by_port = {p["port"]: p for p in _ports(box)}
    assert by_port[8080]["host_port"] == 8080
    assert low <= by_port[80]["host_port"] <= high
    assert by_port[53]["host_ip"] == "127.0.0.1" and by_port[53]["proto"] == "udp"
    assert low <= by_port[53]["host_port"] <= high
    # a second endpoint's ephemeral port never takes one already published
    assert box.cli("connect", net, b, "--create", "-p", "80").returncode == 0
    hosts = [p["host_port"] for p in _ports(box) if p["port"] == 80 and p["proto"] == "tcp"]
    assert len(set(hosts)) == 2
    # `port rm NET NS 80` names the mapping whatever host port it got
    assert box.cli("port", "rm", net, a, "80").returncode == 0
    assert 80 not in {p["port"] for p in _ports(box) if p["netns"] == a}
    assert box.cli("port", "add", net, a, "81").returncode == 0
    assert any(p["port"] == 81 and low <= p["host_port"] <= high for p in _ports(box))
    assert box.cli("network", "rm", "--force", net).returncode == 0
    assert _ports(box) == []


def test_network_ls_filters(sandbox) -> None:
    box = sandbox
    one, two = box.name("front"), box.name("back")
    for name, subnet in ((one, "10.61.0.0/24"), (two, "10.62.0.0/24")):
        assert box.cli("network", "create", name, "--subnet", subnet).returncode == 0

    def names(*filters: str) -> list[str]:
        argv = [x for f in filters for x in ("--filter", f)]
        out = box.cli("network", "ls", "--json", *argv)
        assert out.returncode == 0, out.stderr
        return sorted(n["name"] for n in json.loads(out.stdout))

    assert names("name=front") == [one]
    assert names("name=front", "name=back") == sorted([one, two])  # same key: OR
    assert names("name=front", "driver=bridge") == [one]  # different keys: AND
    assert names("driver=macvlan") == []
    net_id = json.loads(box.cli("network", "inspect", two).stdout)[0]["id"]
    assert names(f"id={net_id[:6]}") == [two]
    bad = box.cli("network", "ls", "--filter", "colour=red")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    table = box.cli("network", "ls", "-f", "name=back")
    assert two in table.stdout and one not in table.stdout


def test_network_inspect_format(sandbox) -> None:
    box = sandbox
    net, a = box.name("fmt"), box.name("a")
    assert box.cli("network", "create", net, "--subnet", "10.63.0.0/24", "--ip-range",
                   "10.63.0.128/25").returncode == 0
    assert box.cli("connect", net, a, "--create").returncode == 0
    out = box.cli("network", "inspect", net, "--format",
                  "{{.Name}} {{.Subnet}} {{.IPRange}} {{.Internal}}")
    assert out.stdout == f"{net} 10.63.0.0/24 10.63.0.128/25 false\n"
    out = box.cli("network", "inspect", net, "-f",
                  "{{range .Endpoints}}{{.Netns}}={{.Address}}{{end}}")
    assert out.stdout == f"{a}=10.63.0.128/24\n"
    out = box.cli("network", "inspect", net, "-f", "{{json .Endpoints}}")
    assert json.loads(out.stdout)[0]["netns"] == a
    for bad in ("{{.Colour}}", "{{range .Endpoints}}", "{{printf .Name}}"):
        res = box.cli("network", "inspect", net, "-f", bad)
        assert res.returncode == 2 and "--format" in res.stderr and not res.stdout, bad
    assert box.cli("network", "rm", "--force", net).returncode == 0


def test_bulk_commands_are_all_or_nothing_and_say_so(sandbox) -> None:
    """The rule for every bulk command: nothing is done unless all of it can
    be; the error names every offender and says nothing was done."""
    box = sandbox
    a, b, ghost, ghost2 = (box.name(p) for p in ("a", "b", "gh", "gz"))
    n1, n2, nx = box.name("n1"), box.name("n2"), box.name("nx")
    assert box.cli("ns", "add", a, b).returncode == 0
    for net, subnet in ((n1, "10.64.0.0/24"), (n2, "10.65.0.0/24")):
        assert box.cli("network", "create", net, "--subnet", subnet).returncode == 0
    assert box.cli("connect", n1, a).returncode == 0
    before = box.fingerprint()
    cases = [
        (["ns", "rm", a, ghost, b, ghost2], 3,
         f"namespaces {ghost!r}, {ghost2!r} do not exist; nothing was removed ({a!r}, {b!r} "
         "left as they were: all or nothing)"),
        (["ns", "add", "x" + a, a], 4, f"namespace {a!r} already exists; nothing was created"),
        (["network", "rm", n1, nx, n2], 3,
         f"network {nx!r} does not exist; nothing was removed ({n1!r}, {n2!r}"),
        (["network", "rm", n1, n2], 5, f"network {n1!r} has endpoints; nothing was removed"),
        (["disconnect", n1, a, b], 3,
         f"namespace {b!r} is not connected to network {n1!r}; nothing was disconnected"),
        (["connect", n2, a, ghost], 3,
         f"namespace {ghost!r} does not exist; nothing was connected ({a!r} left"),
        (["connect", n1, b, a], 4, f"namespace {a!r} is already connected to network {n1!r}; "
         "nothing was connected"),
    ]
    for argv, code, words in cases:
        res = box.cli(*argv)
        assert res.returncode == code and words in res.stderr, (argv, res.stderr)
        assert box.fingerprint() == before, argv
    # and the valid request still works, whole
    assert box.cli("network", "rm", "--force", n1, n2).returncode == 0
    assert box.cli("ns", "rm", a, b).returncode == 0


def test_aux_addresses_are_never_handed_out(sandbox) -> None:
    box = sandbox
    net = box.name("aux")
    names = [box.name(f"x{i}") for i in range(3)]
    res = box.cli("network", "create", net, "--subnet", "10.66.0.0/29", "--aux-address",
                  "printer=10.66.0.2", "--aux-address", "nas=10.66.0.4")
    assert res.returncode == 0, res.stderr
    info = json.loads(box.cli("network", "inspect", net).stdout)[0]
    assert info["aux_addresses"] == {"printer": "10.66.0.2", "nas": "10.66.0.4"}
    assert box.cli("connect", net, *names, "--create").returncode == 0
    got = sorted(e["address"] for e in json.loads(box.cli("network", "inspect", net)
                                                   .stdout)[0]["endpoints"])
    assert got == ["10.66.0.3/29", "10.66.0.5/29", "10.66.0.6/29"]  # .2 and .4 skipped
    extra = box.name("x9")
    res = box.cli("connect", net, extra, "--create", "--ip", "10.66.0.2")
    assert res.returncode == 5 and "in use" in res.stderr
    before = box.fingerprint()
    for bad, words in ((["--aux-address", "p=10.99.0.1"], "outside subnet"),
                       (["--aux-address", "p=10.67.0.1"], "gateway"),
                       (["--aux-address", "noequals"], "KEY=VALUE"),
                       (["--aux-address", "p=10.67.0.2", "--aux-address", "p=10.67.0.3"],
                        "twice")):
        res = box.cli("network", "create", box.name("bad"), "--subnet", "10.67.0.0/24", *bad)
        assert res.returncode == 2 and words in res.stderr, (bad, res.stderr)
    assert box.fingerprint() == before
    assert box.cli("network", "rm", "--force", net).returncode == 0


def test_labels_and_label_filters(sandbox) -> None:
    box = sandbox
    web, db, a, b = box.name("web"), box.name("db"), box.name("a"), box.name("b")
    assert box.cli("network", "create", web, "--subnet", "10.68.0.0/24", "--label", "tier=front",
                   "--label", "team=blue").returncode == 0
    assert box.cli("network", "create", db, "--subnet", "10.69.0.0/24", "--label",
                   "tier=back").returncode == 0
    assert box.cli("connect", web, a, "--create", "--label", "role=proxy").returncode == 0
    assert box.cli("connect", db, b, "--create").returncode == 0

    def nets(*filters: str) -> list[str]:
        out = box.cli("network", "ls", "--json", *[x for f in filters for x in ("-f", f)])
        assert out.returncode == 0, out.stderr
        return sorted(n["name"] for n in json.loads(out.stdout))

    assert nets("label=tier") == sorted([web, db])
    assert nets("label=tier=front") == [web]
    assert nets("label=tier=front", "label=tier=back") == sorted([web, db])
    assert nets("label=team") == [web]
    info = json.loads(box.cli("network", "inspect", web).stdout)[0]
    assert info["labels"] == {"tier": "front", "team": "blue"}
    assert info["endpoints"][0]["labels"] == {"role": "proxy"}
    out = box.cli("ns", "ls", "--json", "--filter", "label=role=proxy")
    assert [n["name"] for n in json.loads(out.stdout)] == [a]
    bad = box.cli("ns", "ls", "--filter", "role=proxy")
    assert bad.returncode == 2 and "label=KEY" in bad.stderr
    bad = box.cli("network", "create", box.name("l"), "--subnet", "10.70.0.0/24", "--label",
                  "no-equals")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    assert box.cli("network", "rm", "--force", web, db).returncode == 0
