"""Every bad input: a one-line error, its exit code, no traceback, nothing made."""

import json
import subprocess
import sys

import pytest

USAGE, NOT_FOUND, EXISTS, CONFLICT, EXHAUSTED, NOT_ROOT = 2, 3, 4, 5, 6, 7


@pytest.fixture
def box(sandbox):
    """A sandbox with one network 'front' (198.51.100.0/28) and one endpoint."""
    assert sandbox.cli("network", "create", "front", "--subnet", "198.51.100.0/28").returncode == 0
    res = sandbox.cli("connect", "front", sandbox.name("e1"), "--create")
    assert res.returncode == 0, res.stderr
    sandbox.host("ip", "link", "add", "foreignbr", "type", "bridge")
    sandbox.host("ip", "addr", "add", "203.0.113.1/24", "dev", "foreignbr")
    sandbox.host("ip", "link", "set", "foreignbr", "up")
    return sandbox


def _assert_clean_error(box, args, code, message):
    before = box.fingerprint()
    res = box.cli(*args)
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr + res.stdout
    assert message in err, err
    assert len(err.splitlines()) == 1, err
    assert box.fingerprint() == before


CASES = [
    (["network", "create", "n2", "--subnet", "10.0.0.0/33"], USAGE, "is not a CIDR"),
    (["network", "create", "n2", "--subnet", "banana"], USAGE, "is not a CIDR"),
    (["network", "create", "n2", "--subnet", "192.0.2.0/24", "--gateway", "192.0.2.300"],
     USAGE, "is not an IP address"),
    (["network", "create", "n2", "--subnet", "192.0.2.0/24", "--gateway", "192.0.3.1"],
     USAGE, "gateway 192.0.3.1 is outside subnet 192.0.2.0/24"),
    (["network", "create", "n2", "--subnet", "192.0.2.0/24", "--ip-range", "192.0.3.0/25"],
     USAGE, "is not inside subnet"),
    (["network", "create", "n2", "--subnet", "192.0.2.0/24", "--bridge", "b" * 16],
     USAGE, "the kernel allows at most 15"),
    (["network", "create", "n2", "--subnet", "192.0.2.0/24", "--bridge", "br/x"],
     USAGE, "illegal character '/'"),
    (["network", "create", "n2", "--subnet", "192.0.2.0/24", "--mtu", "20"],
     USAGE, "MTU 20 is out of range"),
    (["network", "create", "bad name", "--subnet", "192.0.2.0/24"], USAGE, "network name"),
    (["network", "create", "n2", "--subnet", "2001:db8::/64"], USAGE,
     "an IPv4 --subnet is needed"),
    (["network", "create", "n2", "--subnet", "10.9.0.0/24", "--subnet", "10.8.0.0/24"], USAGE,
     "--subnet given twice for IPv4"),
    (["connect", "n2", "x", "--ip6", "10.9.0.5"], USAGE, "not an IPv6 address"),
    (["network", "create", "front", "--subnet", "192.0.2.0/24"], EXISTS, "already exists"),
    (["network", "create", "n2", "--subnet", "192.0.2.0/24", "--bridge", "foreignbr"],
     EXISTS, "was not created by nsnet"),
    (["network", "create", "n2", "--subnet", "198.51.100.0/24"], CONFLICT,
     "overlaps network 'front'"),
    (["network", "create", "n2", "--subnet", "203.0.113.128/25"], CONFLICT,
     "overlaps route 203.0.113.0/24 dev foreignbr in the host namespace"),
    (["network", "rm", "front"], CONFLICT, "has 1 endpoint"),
    (["network", "rm", "nosuch"], NOT_FOUND, "network 'nosuch' does not exist"),
    (["network", "inspect", "nosuch"], NOT_FOUND, "does not exist"),
    (["connect", "nosuch", "x"], NOT_FOUND, "network 'nosuch' does not exist"),
    (["connect", "front", "ghost"], NOT_FOUND, "namespace 'ghost' does not exist"),
    (["connect", "front", "a/b", "--create"], USAGE, "is not a valid file name"),
    (["connect", "front", "..", "--create"], USAGE, "is not a valid file name"),
    (["connect", "front", "", "--create"], USAGE, "must not be empty"),
    (["connect", "front", "n1", "n1", "--create"], USAGE, "is named twice"),
    (["connect", "front", "n1", "--create", "--ip", "198.51.100.99"], USAGE,
     "--ip 198.51.100.99 is outside subnet"),
    (["connect", "front", "n1", "--create", "--ip", "198.51.100.2"], CONFLICT,
     "198.51.100.2 is already in use"),
    (["connect", "front", "n1", "n2", "--create", "--ip", "198.51.100.3"], USAGE,
     "--ip applies to one namespace"),
    (["connect", "front", "n1", "--create", "--mac", "01:00:5e:00:00:01"], USAGE, "multicast"),
    (["connect", "front", "n1", "--create", "--ifname", "x" * 16], USAGE, "at most 15"),
    (["connect", "front", "n1", "--create", "--host-ifname", "v:1"], USAGE,
     "illegal character ':'"),
    (["connect", "front", "n1", "--create", "--host-ifname", "foreignbr"], EXISTS,
     "already exists in the host namespace"),
    (["connect", "front", *[f"m{i}" for i in range(13)], "--create"], EXHAUSTED,
     "exhausted: asked for 13, 12 free"),
    (["disconnect", "front", "ghost"], NOT_FOUND, "is not connected to network 'front'"),
    (["ns", "add", "a/b"], USAGE, "is not a valid file name"),
    (["ns", "rm", "ghost"], NOT_FOUND, "namespace 'ghost' does not exist"),
    (["ns", "exec", "ghost", "--", "true"], NOT_FOUND, "namespace 'ghost' does not exist"),
    (["ping", "ghost", "198.51.100.1"], NOT_FOUND, "does not exist"),
    (["check", "nosuch"], NOT_FOUND, "does not exist"),
    (["--host-netns", "/nonexistent/x", "network", "ls"], NOT_FOUND, "host namespace"),
]


@pytest.mark.parametrize(("args", "code", "message"), CASES,
                         ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input(box, args, code, message):
    _assert_clean_error(box, args, code, message)


def test_duplicate_and_foreign_namespace(box):
    name = box.name("e1")
    _assert_clean_error(box, ["ns", "add", name], EXISTS, "already exists")
    _assert_clean_error(box, ["connect", "front", name], EXISTS, "already connected")
    foreign = box.foreign_netns(box.name("fx"))
    _assert_clean_error(box, ["ns", "rm", foreign], CONFLICT, "was not created by nsnet")


def test_not_root(box):
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-m", "nsnet.cli", "network", "ls"],
                         env=box.env(), capture_output=True, text=True)
    assert res.returncode == NOT_ROOT
    assert res.stderr.strip() == ("nsnet: error: nsnet needs root (CAP_NET_ADMIN and "
                                  "CAP_SYS_ADMIN): run it with sudo")


# ------------------------------------------------------------ hardening (#12)
UNUSABLE = ["127.0.0.0/8", "127.0.0.0/24", "0.0.0.0/8", "224.0.0.0/24", "240.0.0.0/24",
            "255.255.255.252/30"]


@pytest.mark.parametrize("subnet", UNUSABLE)
def test_subnet_that_cannot_be_a_bridge_network(box, subnet):
    """#12.13: e.g. 127.0.0.0/8 would make the embedded DNS bind the host's 127.0.0.1:53."""
    _assert_clean_error(box, ["network", "create", "n2", "--subnet", subnet], USAGE,
                        f"subnet {subnet} cannot be a bridge network")


def test_a_mac_already_on_the_bridge_is_a_conflict(box):
    """#12.18: two bridge ports with one MAC make the bridge's forwarding flap."""
    net = json.loads(box.cli("network", "inspect", "front").stdout)[0]
    mac = net["endpoints"][0]["mac"]
    _assert_clean_error(box, ["connect", "front", "n1", "--create", "--mac", mac.upper()],
                        CONFLICT, f"MAC address {mac} is already used by "
                        f"{box.name('e1')!r} on network 'front'")
    assert box.cli("network", "create", "other", "--subnet", "192.0.2.0/28").returncode == 0
    res = box.cli("connect", "other", "n1", "--create", "--mac", mac)  # another bridge: fine
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(("var", "value"), [
    ("NSNET_LOCK_TIMEOUT", "abc"), ("NSNET_LOCK_TIMEOUT", "nan"), ("NSNET_LOCK_TIMEOUT", "inf"),
    ("NSNET_LOCK_TIMEOUT", "-1"), ("NSNET_CRASH_AT", "abc")])
def test_bad_environment_setting(box, var, value):
    """#12.11: a clear error (exit 2), not a traceback, a hang or a silent default."""
    before = box.fingerprint()
    res = subprocess.run([*box.cli_argv(), "network", "create", "n2", "--subnet",
                          "192.0.2.0/24"], env={**box.env(), var: value},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == USAGE, (res.returncode, res.stderr)
    why = ("is not a number of seconds (0 to 31536000, e.g. NSNET_LOCK_TIMEOUT=120)"
           if var == "NSNET_LOCK_TIMEOUT" else
           "is neither a number of crash points nor a crash point's LABEL (e.g. "
           "NSNET_CRASH_AT=3 or NSNET_CRASH_AT=delete:committed)")
    assert res.stderr.strip().splitlines() == [f"nsnet: error: {var}={value!r} {why}"]
    assert box.fingerprint() == before


@pytest.mark.parametrize(("name", "data", "line", "message"), [
    ("deep.yaml", b"name: x\nnodes: " + b"[" * 20000 + b"]" * 20000 + b"\n", 2,
     "not valid YAML: "),
    ("latin1.yaml", b"name: x\nnetworks:\n  caf\xe9: {subnet: 10.0.0.0/24}\n", 3,
     "not UTF-8 text (byte 0xe9 at offset 23)"),
])
def test_hostile_topology_file(box, tmp_path, name, data, line, message):
    """#12.11: YAML nested 20,000 deep or not UTF-8: one line naming the file."""
    path = tmp_path / name
    path.write_bytes(data)
    for cmd in ("up", "status", "down"):
        _assert_clean_error(box, [cmd, str(path)], USAGE, f"{path}:{line}: {message}")


def _fresh_state(box, tmp_path, db: bytes | None = None, schema: int | None = None) -> dict:
    state = tmp_path / "state9"
    state.mkdir(mode=0o700)
    if db is not None:
        (state / "state.db").write_bytes(db)
    if schema is not None:
        import sqlite3

        con = sqlite3.connect(state / "state.db")
        con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("INSERT INTO meta VALUES('schema', ?)", (str(schema),))
        con.commit()
        con.close()
    return {**box.env(), "NSNET_STATE_DIR": str(state)}


@pytest.mark.parametrize("kind", ["corrupt", "newer"])
def test_unreadable_state_exits_9(box, tmp_path, kind):
    """README: exit code 9, StateError -- unreadable state."""
    env = _fresh_state(box, tmp_path, db=b"this is not SQLite" * 100 if kind == "corrupt"
                       else None, schema=999 if kind == "newer" else None)
    before = box.fingerprint()
    for args in (["network", "ls"], ["network", "create", "n9", "--subnet", "192.0.2.0/24"]):
        res = subprocess.run([*box.cli_argv(), *args], env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 9, (res.returncode, res.stderr)
        err = res.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith("nsnet: error: " + ("cannot open state store in "
                                                  if kind == "corrupt" else "state store "))
        if kind == "newer":
            assert "has schema 999, newer than this nsnet" in err
    assert box.fingerprint() == before
