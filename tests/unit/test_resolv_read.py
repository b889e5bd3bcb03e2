"""dns_sync reads every namespace's resolv.conf for reconcile's drift check
with bare os.open/os.read (5000 of them): it must read what open() read."""

from __future__ import annotations

import os

import pytest

from nsnet.engine.dns_sync import _read_text


@pytest.mark.parametrize("content", [
    b"# nsnet: embedded DNS of network n\nnameserver 10.0.0.1\noptions ndots:0\n",
    b"nameserver 10.0.0.1\r\nsearch example\r\n",  # universal newlines, as open()
    b"old mac\rline\n", b"", "caf\u00e9 \u2603\n".encode(), b"x" * 200_000,
])
def test_reads_what_open_read(tmp_path, content):
    (tmp_path / "ns1").mkdir()
    (tmp_path / "ns1" / "resolv.conf").write_bytes(content)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with open(tmp_path / "ns1" / "resolv.conf") as f:
            assert _read_text(fd, "ns1/resolv.conf") == f.read()
    finally:
        os.close(fd)


def test_missing_file_or_folder_is_none_and_a_symlink_is_followed(tmp_path):
    (tmp_path / "ns1").mkdir()
    (tmp_path / "ns2").write_text("a file where the folder should be")
    (tmp_path / "target").write_text("nameserver 192.0.2.53\n")
    (tmp_path / "ns3").mkdir()
    (tmp_path / "ns3" / "resolv.conf").symlink_to(tmp_path / "target")
    os.mkfifo(tmp_path / "ns1" / "fifo")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _read_text(fd, "ns0/resolv.conf") is None
        assert _read_text(fd, "ns1/resolv.conf") is None
        assert _read_text(fd, "ns2/resolv.conf") is None
        assert _read_text(fd, "ns3/resolv.conf") == "nameserver 192.0.2.53\n"
        assert _read_text(fd, "ns1/fifo") == ""  # a FIFO cannot hang reconcile
    finally:
        os.close(fd)
