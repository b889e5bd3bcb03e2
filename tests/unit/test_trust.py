"""StrictModes-style directory checks and symlink-proof writes (no root needed:
"trusted" is root or the caller; the other-user cases are tests/security)."""

from __future__ import annotations

import os

import pytest

from nsnet.errors import PermissionDenied
from nsnet.state.trust import (
    check_trusted_dir,
    ensure_trusted_dir,
    read_marked_file,
    write_marked_file,
)


def test_private_dirs_and_missing_tails_are_trusted(tmp_path) -> None:
    (tmp_path / "a").mkdir(mode=0o755)
    check_trusted_dir(str(tmp_path / "a"))
    check_trusted_dir(str(tmp_path / "a" / "not" / "yet"))  # nsnet will create it
    ensure_trusted_dir(str(tmp_path / "a" / "b"), "state directory", 0o700)
    assert oct((tmp_path / "a" / "b").stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777, 0o757])
def test_a_dir_others_can_write_is_refused_itself_or_above(tmp_path, mode) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(PermissionDenied, match=r"state directory .*: .* is writable by"):
        check_trusted_dir(str(d), "state directory")
    inner = d / "inner"
    inner.mkdir(mode=0o700)
    if mode & 0o1000:  # sticky above (as /tmp): only the owner may rename what is inside
        check_trusted_dir(str(inner))
    else:
        with pytest.raises(PermissionDenied, match="is writable by"):
            check_trusted_dir(str(inner))


def test_symlinks_are_followed_and_their_targets_checked(tmp_path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(mode=0o700)
    bad.mkdir()
    bad.chmod(0o777)
    (tmp_path / "to-good").symlink_to(good)
    (tmp_path / "to-bad").symlink_to("bad")
    check_trusted_dir(str(tmp_path / "to-good"))
    with pytest.raises(PermissionDenied, match="writable by others"):
        check_trusted_dir(str(tmp_path / "to-bad" / "x"))
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(PermissionDenied, match="too many levels of symlinks"):
        check_trusted_dir(str(tmp_path / "loop"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionDenied, match="is not a directory"):
        check_trusted_dir(str(tmp_path / "file"))


def test_marked_file_lifecycle_and_what_it_leaves_alone(tmp_path) -> None:
    base = str(tmp_path)
    assert write_marked_file(base, "ns1", "resolv.conf", "# mark a\n", "# mark") is True
    assert read_marked_file(base, "ns1", "resolv.conf") == "# mark a\n"
    assert write_marked_file(base, "ns1", "resolv.conf", "# mark a\n", "# mark") is True
    assert write_marked_file(base, "ns1", "resolv.conf", None, "# mark") is False
    assert not (tmp_path / "ns1").exists()  # the empty folder goes too
    (tmp_path / "ns2").mkdir()
    (tmp_path / "ns2" / "resolv.conf").write_text("nameserver 192.0.2.1\n")  # someone else's
    assert write_marked_file(base, "ns2", "resolv.conf", "# mark\n", "# mark") is False
    assert write_marked_file(base, "ns2", "resolv.conf", None, "# mark") is False
    assert (tmp_path / "ns2" / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
    victim = tmp_path / "victim"
    victim.write_text("# mark: even a marked target is never written through\n")
    (tmp_path / "ns3").mkdir()
    (tmp_path / "ns3" / "resolv.conf").symlink_to(victim)
    for text in ("# mark new\n", None):
        assert write_marked_file(base, "ns3", "resolv.conf", text, "# mark") is False
    assert read_marked_file(base, "ns3", "resolv.conf") is None
    assert victim.read_text().startswith("# mark: even")
    (tmp_path / "ns4").symlink_to(tmp_path / "ns2")  # a symlinked folder: not nsnet's
    with pytest.raises(OSError, match="not a plain directory"):
        write_marked_file(base, "ns4", "resolv.conf", "# mark\n", "# mark")
    for bad in ("..", "a/b", ""):
        with pytest.raises(OSError, match="not a plain file name"):
            write_marked_file(base, bad, "resolv.conf", "# mark\n", "# mark")
    assert sorted(os.listdir(tmp_path)) == ["ns2", "ns3", "ns4", "victim"]  # no temporaries
