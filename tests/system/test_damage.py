"""One table of damage: (case, entry point, argv, what the one line must say). Each case gives
a real command a damaged or hostile input (a file, a flag, a path) and expects exit code 2,
one error line naming the file or flag (argparse's usage lines may precede it) and no
traceback. Adding a case is one row; the inputs are made once per module from real
components (a saved model, a collected dataset, a pretraining checkpoint, hostile pickles
and YAML). Rows marked ``SUB`` also run as a subprocess, as a user would run the command."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bombs import deflated
from checkout import ROOT
from legacy_fixtures import FIXTURES
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tdmpc2_data.collect import collect
from tdmpc2_model import TDMPC2, TDMPC2Config
from tdmpc2_model.formats.run_checkpoint import save_checkpoint

TASK = "mw-reach"
DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested 100,000 levels deep, spliced in as text
ENTRY = {  # prog -> (module, function)
    "tdmpc2-train": ("tdmpc2_model.apps.cli", "train_main"),
    "tdmpc2-finetune": ("tdmpc2_model.apps.cli", "finetune_main"),
    "tdmpc2-pretrain": ("tdmpc2_model.apps.cli", "pretrain_main"),
    "tdmpc2-eval": ("tdmpc2_model.apps.cli", "eval_main"),
    "tdmpc2-data": ("tdmpc2_data.cli", "main"),
}
SUB = "subprocess"
_ONLINE = ["--size", "1M", "--steps", "100", "--seed-steps", "50", "--eval-episodes", "0"]


def _pretrain(*extra: str) -> list[str]:
    return ["--size", "1M", "--data", "{data}", "--max-steps", "4", "--batch-size", "16",
            "--accelerator", "cpu", "--devices", "1", "--num-workers", "0", "--out",
            "{tmp}/pt", *extra]  # fmt: skip


def _train(*extra: str) -> list[str]:
    return ["--task", TASK, *_ONLINE, "--out", "{tmp}/run", *extra]


def _finetune(*extra: str) -> list[str]:
    return ["--task", TASK, "--steps", "100", "--seed-steps", "50", "--eval-episodes", "0",
            "--out", "{tmp}/ft", *extra]  # fmt: skip


def _eval(*extra: str) -> list[str]:
    return ["--task", TASK, "--episodes", "1", *extra]


# (case id, entry point, argv, text the error line holds, marks); {name} = an input below
CASES = [
    # unsafe or invalid YAML, bad --config values: refused by the parser
    ("recipe-unsafe-tag", "tdmpc2-train", _train("--recipe", "{evil_yaml}"),
     "evil.yaml: not a valid recipe (could not determine a constructor", SUB),
    ("recipe-unparsable", "tdmpc2-pretrain", _pretrain("--recipe", "{bad_yaml}"),
     "bad.yaml: not a valid recipe", ""),
    ("config-unsafe-tag", "tdmpc2-train", _train("--config", "x=!!python/name:os.system"),
     "--config 'x=!!python/name:os.system': not a YAML value", ""),
    ("config-unknown-field", "tdmpc2-train", _train("--config", "bogus=1"),
     "--config: unknown TDMPC2Config field(s) ['bogus']", ""),
    ("config-wrong-type", "tdmpc2-finetune", _finetune("--checkpoint", "{model}", "--config",
     "lr=abc"), "--config lr='abc': expected a finite number", ""),
    ("config-nan", "tdmpc2-pretrain", _pretrain("--config", "lr=.nan"),
     "--config lr=nan: expected a finite number", ""),
    ("config-set-by-a-flag", "tdmpc2-pretrain", _pretrain("--config", "batch_size=3"),
     "--config batch_size: set by pretraining itself", ""),
    ("config-size-of-train", "tdmpc2-train", _train("--config", "size=5M"),
     "--config size=...: set it with --size", ""),
    # hostile or foreign files where a checkpoint is expected
    ("checkpoint-hostile-pickle", "tdmpc2-eval", _eval("--checkpoint", "{evil_pt}"),
     "evil.pt: not a TD-MPC2 checkpoint; torch.load(weights_only=True) refused it", SUB),
    ("checkpoint-text-as-ckpt", "tdmpc2-eval", _eval("--checkpoint", "{text_ckpt}"),
     "notckpt.ckpt: not a tdmpc2-pretrain Lightning checkpoint", ""),
    ("resume-hostile-ckpt", "tdmpc2-pretrain", _pretrain("--resume", "{evil_ckpt}"),
     "evil.ckpt: not a tdmpc2-pretrain Lightning checkpoint", ""),
    ("resume-hostile-trainer-state", "tdmpc2-train",
     ["--task", TASK, *_ONLINE, "--out", "{hostile_run}", "--resume"],
     "trainer_state.pt: not an online trainer state", ""),
    ("checkpoint-missing-pt", "tdmpc2-eval", _eval("--checkpoint", "{tmp}/missing.pt"),
     "missing.pt: no such checkpoint file", ""),
    ("finetune-missing-pt", "tdmpc2-finetune", _finetune("--checkpoint", "{tmp}/missing.pt"),
     "missing.pt: no such checkpoint file", ""),
    ("resume-missing-ckpt", "tdmpc2-pretrain", _pretrain("--resume", "{tmp}/missing.ckpt"),
     "--resume {tmp}/missing.ckpt: no such Lightning checkpoint file", ""),
    # devices this build or machine does not have
    ("device-cuda-on-cpu", "tdmpc2-train", _train("--device", "cuda"),
     "--device cuda: not available", SUB + " nocuda"),
    ("device-name", "tdmpc2-eval", _eval("--checkpoint", "{model}", "--device", "foo"),
     "--device 'foo': not a device name", ""),
    ("accelerator-gpu-on-cpu", "tdmpc2-pretrain", _pretrain("--accelerator", "gpu"),
     "--accelerator gpu: no CUDA GPU here", "nocuda"),
    # accepted before, invalid: refused up front
    ("batch-size-0", "tdmpc2-train", _train("--batch-size", "0"),
     "--batch-size 0: must be >= 1", SUB),
    ("pretrain-batch-size-0", "tdmpc2-pretrain", [*_pretrain(), "--batch-size", "0"],
     "--batch-size 0: must be >= 1", ""),
    ("checkpoint-every-0", "tdmpc2-pretrain", _pretrain("--checkpoint-every", "0"),
     "--checkpoint-every 0: must be >= 1", ""),
    ("checkpoint-every-negative", "tdmpc2-train", _train("--checkpoint-every", "-5"),
     "--checkpoint-every -5: must be >= 1", ""),
    ("log-every-0", "tdmpc2-pretrain", _pretrain("--log-every", "0"),
     "--log-every 0: must be >= 1", ""),
    ("devices-0", "tdmpc2-pretrain", [*_pretrain(), "--devices", "0"],
     "--devices 0: must be >= 1, -1 (all) or auto", ""),
    ("devices-negative", "tdmpc2-pretrain", [*_pretrain(), "--devices", "-3"],
     "--devices -3: must be >= 1", ""),
    ("eval-every-negative", "tdmpc2-train", _train("--eval-every", "-1"),
     "--eval-every -1: must be >= 0", ""),
    ("steps-0", "tdmpc2-train", [*_train(), "--steps", "0"], "--steps 0: must be >= 1", ""),
    ("max-steps-0", "tdmpc2-pretrain", [*_pretrain(), "--max-steps", "0"],
     "--max-steps 0: must be >= 1", ""),
    ("eval-episodes-0", "tdmpc2-eval", _eval("--checkpoint", "{model}", "--episodes", "0"),
     "--episodes 0: must be >= 1", ""),
    # results that could not be written: refused before the evaluation
    ("eval-json-missing-dir", "tdmpc2-eval",
     _eval("--checkpoint", "{model}", "--json", "{tmp}/no/such/dir/eval.json"),
     "--json {tmp}/no/such/dir/eval.json: cannot write there", SUB),
    ("eval-json-is-a-dir", "tdmpc2-eval", _eval("--checkpoint", "{model}", "--json", "{tmp}"),
     "--json {tmp}: is a directory", ""),
    ("eval-json-under-a-file", "tdmpc2-eval",
     _eval("--checkpoint", "{model}", "--json", "{evil_pt}/eval.json"),
     "evil.pt/eval.json: cannot write there", ""),
    ("eval-video-dir-is-a-file", "tdmpc2-eval",
     _eval("--checkpoint", "{model}", "--video", "{evil_pt}"),
     "--video {evil_pt}: cannot write videos there", ""),
    ("eval-out-is-a-file", "tdmpc2-eval",
     ["--checkpoint", "{model}", "--tasks", TASK, "--episodes", "1", "--out", "{evil_pt}"],
     "--out {evil_pt}: cannot write the results there", ""),
    # damaged weights
    ("weights-flipped-bytes", "tdmpc2-eval", _eval("--checkpoint", "{flipped}"),
     "flipped/model.safetensors: the weights do not match the sha256", SUB),
    ("weights-flipped-finetune", "tdmpc2-finetune", _finetune("--checkpoint", "{flipped}"),
     "the weights do not match the sha256", ""),
    ("weights-nan-without-checksum", "tdmpc2-eval", _eval("--checkpoint", "{nan_model}"),
     "nan_model: tensor '_reward.2.weight' holds 1 non-finite value(s)", ""),
    # data
    ("convert-tasks-outside-the-set", "tdmpc2-data",
     ["convert", str(FIXTURES / "mt80_chunk_tiny.pt"), "{tmp}/ds", "--task-set", "mt30"],
     "2 episodes of mw-door-open (2) not in --task-set mt30", SUB),
    ("convert-compressed-tensor-record", "tdmpc2-data",
     ["convert", "{deflated_pt}", "{tmp}/ds", "--from", "legacy-pt"],
     "chunk_0.pt: archive member mt80_chunk_tiny/data/0 is compressed (zip method 8)", ""),
    # training that meets a NaN
    ("pretrain-resume-nan-weight", "tdmpc2-pretrain", [*_pretrain("--resume", "auto"), "--out",
     "{nan_run}", "--max-steps", "6"],
     "last.ckpt: tensor '_reward.2.weight' holds 1 non-finite value(s)", ""),
    ("pretrain-diverging-lr", "tdmpc2-pretrain", _pretrain("--config", "lr=1.0e+38"),
     "update 1: non-finite pi_loss", ""),
    # sizes that cannot fit: refused before allocating, naming the field
    ("config-json-huge-latent", "tdmpc2-eval", _eval("--checkpoint", "{huge_latent}"),
     "huge_latent/config.json: Got latent_dim=100000000; must be <= 65536", SUB),
    ("pretrain-batch-size-huge", "tdmpc2-pretrain", [*_pretrain(), "--batch-size", "1000000000"],
     "--batch-size 1000000000 on CPU (one process): needs about", SUB),
    ("train-config-widths-huge", "tdmpc2-train", _train("--config", "enc_dim=65536", "--config",
     "num_enc_layers=64"), "Got enc_dim=65536, mlp_dim=384, latent_dim=128, num_enc_layers=64, "
     "num_q=2, task_dim=0: training this model needs about", ""),
    # JSON metadata nested too deeply or too large to be what it claims
    ("config-json-deep", "tdmpc2-eval", _eval("--checkpoint", "{deep_config}"),
     "deep_config/config.json: JSON nested too deeply to read", SUB),
    ("config-json-1gb", "tdmpc2-eval", _eval("--checkpoint", "{big_config}"),
     "big_config/config.json: 1,073,741,824 bytes, more than a model config.json ever holds", ""),
    ("run-json-deep", "tdmpc2-train", ["--task", TASK, *_ONLINE, "--out", "{deep_run}", "--resume"],
     "deep_run/run.json: JSON nested too deeply to read", ""),
    ("zarr-json-deep", "tdmpc2-data", ["info", "{deep_data}"],
     "deep_data/zarr.json: JSON nested too deeply to read", SUB),
    ("zarr-json-1gb", "tdmpc2-data", ["info", "{big_data}"],
     "big_data/zarr.json: 1,073,741,824 bytes, more than a dataset index ever holds", ""),
    # flags: empty task lists, NaN/inf, seeds numpy and torch refuse, endless task names
    ("eval-tasks-empty", "tdmpc2-eval", ["--checkpoint", "{model}", "--tasks", "", "--out",
     "{tmp}/ev"], "argument --tasks: expected a task set (mt80, mt30 ...) or a comma list", SUB),
    ("pretrain-eval-tasks-commas", "tdmpc2-pretrain", _pretrain("--eval-tasks", ",,"),
     "argument --eval-tasks: expected a task set", ""),
    ("merge-tasks-empty", "tdmpc2-data", ["merge", "{data}", "{tmp}/m", "--tasks", " "],
     "argument --tasks: expected a task set", ""),
    ("cache-gb-nan", "tdmpc2-pretrain", _pretrain("--cache-gb", "nan"),
     "argument --cache-gb: expected a finite number; got 'nan'", SUB),
    ("cache-gb-inf", "tdmpc2-pretrain", _pretrain("--cache-gb", "inf"),
     "argument --cache-gb: expected a finite number; got 'inf'", ""),
    ("seed-negative", "tdmpc2-eval", _eval("--checkpoint", "{model}", "--seed", "-1"),
     "argument --seed: -1: must be in [0, 2**32 - 1]", SUB),
    ("seed-2-to-the-32", "tdmpc2-train", _train("--seed", "4294967296"),
     "argument --seed: 4294967296: must be in [0, 2**32 - 1]", ""),
    ("collect-seed-negative", "tdmpc2-data", ["collect", "{tmp}/c", "--tasks", TASK, "--episodes",
     "1", "--seed", "-1"], "argument --seed: -1: must be in", ""),
    ("task-name-100k-eval", "tdmpc2-eval", ["--checkpoint", "{model}", "--task", "x" * 100_000],
     "xxxxxxxxxx...' (100002 chars). Run `tdmpc2-data list`", ""),
    ("task-name-100k-train", "tdmpc2-train", ["--task", "x" * 100_000, *_ONLINE],
     "xxxxxxxxxx...' (100002 chars), which is not a registry task", ""),
]  # fmt: skip


# ----------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """The damaged and hostile inputs the table names, made once."""
    from tdmpc2_model.apps.cli import pretrain_main

    root = tmp_path_factory.mktemp("inputs")
    paths: dict[str, Path] = {}

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'PWNED'}",))

    paths["evil_pt"] = root / "evil.pt"
    paths["evil_pt"].write_bytes(pickle.dumps(Evil()))
    paths["evil_ckpt"] = root / "evil.ckpt"
    torch.save({"state_dict": Evil()}, paths["evil_ckpt"])  # a zip archive with a bad pickle
    paths["text_ckpt"] = root / "notckpt.ckpt"
    paths["text_ckpt"].write_text("hello\n")
    paths["evil_yaml"] = root / "evil.yaml"
    paths["evil_yaml"].write_text(f'steps: !!python/object/apply:os.system ["touch {root}/P"]\n')
    paths["bad_yaml"] = root / "bad.yaml"
    paths["bad_yaml"].write_text("steps: [1, 2\n")
    paths["deflated_pt"] = deflated(FIXTURES / "mt80_chunk_tiny.pt", root / "chunk_0.pt")

    agent = TDMPC2(TDMPC2Config(size="1M", tasks=TASK, num_samples=32, num_elites=4,
                                num_pi_trajs=4, iterations=1))  # fmt: skip
    paths["model"] = agent.save_pretrained(root / "model")
    flipped = agent.save_pretrained(root / "flipped")
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[-200:-136] = bytes(b ^ 0xFF for b in data[-200:-136])
    (flipped / "model.safetensors").write_bytes(bytes(data))
    paths["flipped"] = flipped
    nan_model = agent.save_pretrained(root / "nan_model")  # as written before the checksum
    with safe_open(nan_model / "model.safetensors", framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != "tensors_sha256"}
    tensors = load_file(nan_model / "model.safetensors")
    tensors["_reward.2.weight"][0, 0] = float("nan")
    save_file(tensors, nan_model / "model.safetensors", metadata=metadata)
    paths["nan_model"] = nan_model

    hostile_run = root / "hostile_run"  # an online run whose trainer state is a hostile pickle
    checkpoint = save_checkpoint(hostile_run, agent, 100)
    (checkpoint / "trainer_state.pt").write_bytes(pickle.dumps(Evil()))
    run = {"task": TASK, "seed": 0, "seed_steps": 50, "model_tasks": [TASK], "size": "1M"}
    (hostile_run / "run.json").write_text(json.dumps(run))
    paths["hostile_run"] = hostile_run

    config = json.loads((paths["model"] / "config.json").read_text())
    for name, text in (("huge_latent", json.dumps({**config, "latent_dim": 10**8})),
                       ("deep_config", f'{json.dumps(config)[:-1]}, "provenance": {DEEP}}}'),
                       ("big_config", "")):  # fmt: skip
        paths[name] = shutil.copytree(paths["model"], root / name)
        (paths[name] / "config.json").write_text(text)
    _sparse_gb(paths["big_config"] / "config.json")
    paths["deep_run"] = root / "deep_run"
    paths["deep_run"].mkdir()
    (paths["deep_run"] / "run.json").write_text(DEEP)
    paths["data"] = collect(root / "data", [TASK], episodes=2, seed=0)
    for name in ("deep_data", "big_data"):
        paths[name] = shutil.copytree(paths["data"], root / name)
    (paths["deep_data"] / "zarr.json").write_text(f'{{"node_type": "group", "attributes": {DEEP}}}')
    _sparse_gb(paths["big_data"] / "zarr.json")
    nan_run = root / "nan_run"  # a real pretraining run, then a NaN put into its checkpoint
    argv = [a.format(data=paths["data"], tmp=root) for a in _pretrain("--out", str(nan_run))]
    assert pretrain_main(argv) == 0
    ckpt = torch.load(nan_run / "lightning" / "last.ckpt", weights_only=False)
    ckpt["state_dict"]["agent.model._reward.2.weight"][0, 0] = float("nan")
    torch.save(ckpt, nan_run / "lightning" / "last.ckpt")
    paths["nan_run"] = nan_run
    return {k: str(v) for k, v in paths.items()}


def _sparse_gb(path: Path) -> None:
    """Make ``path`` a 1 GiB file (sparse: instant, and no disk used)."""
    with open(path, "r+b") as f:
        f.truncate(1 << 30)


def _run_subprocess(prog: str, argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """The command as a user runs it: a fresh interpreter on this checkout."""
    module, function = ENTRY[prog]
    code = f"import sys; from {module} import {function} as f; sys.exit(f(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def _params():
    for case, prog, argv, says, marks in CASES:
        extra = [pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA")]
        yield pytest.param(case, prog, argv, says, False, id=case,
                           marks=extra if "nocuda" in marks else [])  # fmt: skip
        if SUB in marks:
            yield pytest.param(case, prog, argv, says, True, id=f"{case}-{SUB}",
                               marks=extra if "nocuda" in marks else [])  # fmt: skip


@pytest.mark.parametrize("case, prog, argv, says, as_subprocess", _params())
def test_damage_is_one_line_naming_it(
    case, prog, argv, says, as_subprocess, inputs, tmp_path, capsys, monkeypatch
):
    names = {**inputs, "tmp": str(tmp_path)}
    argv = [a.format(**names) for a in argv]
    says = says.format(**names)
    monkeypatch.chdir(tmp_path)
    if as_subprocess:
        rc, out, err = _run_subprocess(prog, argv, tmp_path)
    else:
        module, function = ENTRY[prog]
        main = getattr(__import__(module, fromlist=[function]), function)
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's parser.error
            rc = exc.code
        out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, (case, rc, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert lines, "no error line"
    head = f"{prog}{' ' + argv[0] if prog == 'tdmpc2-data' else ''}: error: "
    assert lines[-1].startswith(head) and says in lines[-1], lines[-1]
    before = lines[:-1]  # argparse's usage lines, and progress bars of a real run
    assert all(x.startswith(("usage:", " ")) or "\r" in x or "INFO" in x for x in before), before
    assert "mean return" not in out  # nothing was evaluated (or lost) first
    assert not (Path(inputs["evil_pt"]).parent / "PWNED").exists()  # no hostile file ran code
