"""A sample of the fault-injection harness (make reliability runs all of it)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fault_injection_sample():
    res = subprocess.run([sys.executable, "-m", "bench.reliability", "--sample", "14",
                          "--random", "4"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "leaks or inconsistencies found: 0" in res.stdout
    assert "kill points tried: 14 crash points" in res.stdout
