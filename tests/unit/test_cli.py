"""CLI parsing without root (CliRunner)."""

import pytest
from click.testing import CliRunner

from nsnet.cli import cli


@pytest.fixture
def run(monkeypatch, tmp_path):
    monkeypatch.setenv("NSNET_STATE_DIR", str(tmp_path))

    def invoke(*args):
        return CliRunner().invoke(cli, list(args))
    return invoke


def test_help_lists_commands(run):
    res = run("--help")
    assert res.exit_code == 0
    for cmd in ("lab", "ns", "network", "connect", "disconnect", "ping", "check"):
        assert cmd in res.output


@pytest.mark.parametrize("args", [
    ["network", "create", "n"],  # --subnet missing
    ["network", "create", "n", "--subnet", "10.0.0.0/24", "--mtu", "abc"],
    ["ping", "ns1", "10.0.0.1", "-c", "0"],
    ["connect", "net"],  # no namespace
    ["ns", "add"],
    ["bogus"],
])
def test_usage_errors_exit_2(run, args):
    res = run(*args)
    assert res.exit_code == 2
    assert "Traceback" not in res.output


def test_not_root_is_a_clean_error(run, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    res = run("network", "ls")
    assert res.exit_code == 7
    assert "nsnet: error: nsnet needs root" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_version(run):
    res = run("--version")
    assert res.exit_code == 0 and "nsnet" in res.output
