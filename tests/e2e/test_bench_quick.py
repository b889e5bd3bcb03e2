"""`python -m bench.setup --quick`: a smoke check of the benchmark harness
(every method runs and verifies at N=10).  Timings are not asserted here:
targets are judged by the benchmark itself (make bench)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_quick(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bench.setup", "--quick", "--out",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    for method in ("article", "cni", "ip-batch", "floor", "nsnet-cli", "nsnet-api"):
        assert f"| 10 | {method} |" in res.stdout
    assert "| no" not in res.stdout.lower().replace("| nsnet", "")
    assert "NO:" not in res.stdout
    assert (tmp_path / "setup.md").exists()
