"""``cpu.keep_freed_memory``: after it, repeated updates stop page-faulting their tensors in."""

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.cpu import keep_freed_memory
tuned = sys.argv[1] == "tuned" and keep_freed_memory()
torch.set_num_threads(1)
agent = TDMPC2(TDMPC2Config(size="1M", tasks="walker-walk"))
batch = {"obs": torch.randn(4, 256, 24), "action": torch.rand(3, 256, 6), "reward": torch.rand(3, 256)}
for _ in range(10):
    agent.update(batch)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    agent.update(batch)
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc settings")
def test_updates_stop_page_faulting():
    def faults(mode: str) -> tuple[str, float]:
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                             text=True, check=True, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
        tuned, count = out.stdout.split()
        return tuned, float(count)

    tuned, after = faults("tuned")
    assert tuned == "True"
    assert after < 500, f"{after} page faults per update with freed memory kept"
    _, before = faults("default")
    print(f"page faults per 1M update: {before:.0f} default, {after:.0f} tuned")
