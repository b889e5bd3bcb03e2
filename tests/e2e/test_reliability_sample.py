"""A sample of the fault-injection harness (make reliability runs all of it).

The sample is deterministic: half of it is the last crash point of steps
(after a commit, where leaks of post-commit work hide), half spread over all
points; every trial compares the whole world nsnet makes with a clean run's
(bench/reliability_world.py).  One more trial plants leaks the harness must
report, so a harness that stops seeing leaks fails here."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.long
def test_fault_injection_sample():
    res = subprocess.run([sys.executable, "-m", "bench.reliability", "--sample", "8",
                          "--random", "2", "--plant-check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "leaks or inconsistencies found: 0" in res.stdout
    assert "kill points tried: 8 crash points" in res.stdout
    assert "planted leaks caught: 3/3" in res.stdout


@pytest.mark.long
def test_rollbacks_leave_the_host_as_they_found_it():
    """Two kills the full run once caught leaking: a connect into existing
    namespaces (``ns add`` made them: lo down) killed after configuring their
    inside left lo up with 127.0.0.1; a network create killed after its
    firewall left IPv4 forwarding on."""
    res = subprocess.run([sys.executable, "-m", "bench.reliability", "--only", "3:4", "0:4",
                          "--random", "0"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "leaks or inconsistencies found: 0" in res.stdout
