"""retain_freed_memory: planning stops page-faulting fresh memory for its activations."""

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.evaluation.malloc import retain_freed_memory
assert retain_freed_memory()
torch.set_num_threads(1)
agent = TDMPC2(TDMPC2Config(size="1M", tasks="cheetah-run", num_samples=256))
obs = torch.randn(17)
agent.act(obs)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
agent.act(obs)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_planning_reuses_freed_memory():
    # a fresh process: the setting is process-wide (about 9000 faults per act() without it)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) < 300
