"""Peak memory of ``TDMPC2.from_pretrained`` on a published-layout multitask checkpoint.

Writes an mt80 legacy file in the published multitask layout (``{"model": Oct-2023 state
dict, "cfg": the stored config}``, by ``tests/model/formats/published_writer.py``) of the
given size into a temporary directory (deleted after), then, each in a fresh subprocess: the
baseline (peak RSS after importing torch and the package) and the load (peak RSS, seconds, the
model's bytes: every tensor of its state dict, learnable or not). ``--bare`` writes
``{"model": ...}`` alone (what code before the stored config could read), ``--pythonpath``
loads with another checkout's code (e.g. the code before memory-mapped loading) for comparison.

    python bench/load.py                       # 317M: a ~2 GB file
    python bench/load.py --size 5M
    python bench/load.py --bare --pythonpath ../main   # the same file with other code
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRITE = """
import sys, torch
sys.path.insert(0, {tests!r})
from published_writer import multitask_file, to_flat_layout
from tdmpc2_data.tasks import TASK_SETS
from tdmpc2_model import TDMPC2, TDMPC2Config
if {bare}:
    torch.manual_seed(0)
    model = TDMPC2(TDMPC2Config(size={size!r}, tasks="mt80")).model
    torch.save({{"model": to_flat_layout(model.state_dict())}}, {path!r})
else:
    multitask_file({path!r}, TASK_SETS["mt80"], size={size!r}, name="mt80")
print("{{}}")
"""

MEASURE = """
import json, resource, time
import torch
from tdmpc2_model import TDMPC2
if {load}:
    start = time.perf_counter()
    agent = TDMPC2.from_pretrained({path!r})
    seconds = time.perf_counter() - start
    state = agent.model.state_dict()
    out = {{"seconds": seconds, "params": agent.model.total_params,
           "model_bytes": sum(t.numel() * t.element_size() for t in state.values())}}
else:
    out = {{}}
out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def run(code: str, pythonpath: Path) -> dict:
    """``code`` in a fresh interpreter importing the package from ``pythonpath`` (run from
    the file system root: ``python -c`` puts the working directory first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath.resolve())}
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd="/",
                          capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="317M")
    parser.add_argument("--bare", action="store_true", help="no stored config in the file")
    parser.add_argument("--pythonpath", type=Path, default=ROOT, help="checkout that loads")
    args = parser.parse_args()
    gb = 1e9
    with tempfile.TemporaryDirectory(prefix="tdmpc2-load-") as tmp:
        path = str(Path(tmp) / f"mt80-{args.size}.pt")
        writer_dir = ROOT / "tests" / "model" / "formats"
        run(WRITE.format(tests=str(writer_dir), bare=args.bare, size=args.size, path=path),
            ROOT)  # fmt: skip
        base = run(MEASURE.format(load=False, path=path), args.pythonpath)
        load = run(MEASURE.format(load=True, path=path), args.pythonpath)
        size = os.path.getsize(path)
    over = (load["peak_rss"] - base["peak_rss"]) / load["model_bytes"]
    print(f"file {size / gb:.3f} GB ({args.size}, {load['params']:,} learnable params); "
          f"model {load['model_bytes'] / gb:.3f} GB; baseline RSS {base['peak_rss'] / gb:.3f} GB; "
          f"peak RSS {load['peak_rss'] / gb:.3f} GB = baseline + {over:.2f} x model; "
          f"{load['seconds']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
