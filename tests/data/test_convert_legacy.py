"""Legacy `.pt` chunk conversion: the fixtures from the original, synthetic chunks, hostile files."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from bombs import deflate_bomb, deflated
from legacy_chunks import (
    FIXTURES,
    PUBLISHED,
    TD02,
    assert_matches,
    handwritten_chunk,
    hostile_chunk,
    hostile_edits,
    hostile_published_chunk,
    hostile_published_edits,
    in_expected_order,
    rewrite_pickle,
    stored_episodes,
    truncated_pickle_chunk,
)

from tdmpc2_data import TASK_SETS, open_dataset
from tdmpc2_data.cli import main as cli
from tdmpc2_data.convert import convert, guess_format, legacy_pt
from tdmpc2_data.convert.safe_pickle import TorchZip, UnsafePickleError, as_tensordict
from tdmpc2_data.format import verify_dataset
from tdmpc2_data.schema import DatasetError


@pytest.mark.parametrize("name, task_set", [("mt80", "mt80"), ("mt30", "mt30")])
def test_tiny_chunks_match_the_expected_arrays(tmp_path, name, task_set):
    expected = np.load(FIXTURES / f"{name}_chunk_tiny_expected.npz")
    [result] = convert([FIXTURES / f"{name}_chunk_tiny.pt"], tmp_path / "ds")  # format guessed
    assert result.task_set == task_set and result.episodes == len(expected["task"])
    ds = open_dataset(tmp_path / "ds")
    assert ds.tasks == TASK_SETS[task_set]  # published ids kept
    got = in_expected_order(stored_episodes(tmp_path / "ds"), expected["task"])
    for k in ("obs", "action", "reward", "task"):
        assert got[k].dtype == expected[k].dtype
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    assert verify_dataset(tmp_path / "ds").ok


@pytest.mark.parametrize("layout", [TD02, PUBLISHED], ids=["td02", "published"])
@pytest.mark.parametrize("name", ["mt80", "mt30"])
def test_2023_chunks_convert_from_the_cli_without_tensordict(tmp_path, name, layout):
    """The tensordict 0.2.x layout (TensorDict NEWOBJ + BUILD, _StringOnlyDict, set()) and the
    published chunks' (the same with `_device = torch.device('cpu')`: a 7-key state of June
    2023 for mt80, 0.2.1 with protocol 4 for mt30): `tdmpc2-data convert` matches the
    expected arrays exactly, with tensordict unimportable."""
    dst = tmp_path / "ds"
    code = (
        "import sys; sys.modules['tensordict'] = None\n"  # any tensordict import fails
        "from tdmpc2_data.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "convert", str(layout[name]), str(dst), "--from", "legacy-pt"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert f"({name})" in run.stdout
    assert open_dataset(dst).tasks == TASK_SETS[name]
    assert_matches(dst, name)
    assert verify_dataset(dst).ok


def test_all_layouts_load_the_same_tensors():
    for name in ("mt80", "mt30"):
        for path in (TD02[name], PUBLISHED[name]):
            with TorchZip(FIXTURES / f"{name}_chunk_tiny.pt") as new, TorchZip(path) as old:
                a, b = as_tensordict(new.load(), "new"), as_tensordict(old.load(), "old")
                assert a.batch_size == b.batch_size and sorted(a.fields) == sorted(b.fields)
                assert a.device is None
                assert b.device == ("cpu" if path == PUBLISHED[name] else None)
                for k in a.fields:
                    assert a.fields[k].dtype == b.fields[k].dtype
                    np.testing.assert_array_equal(a.fields[k], b.fields[k], err_msg=k)


def test_published_chunks_convert_exactly(tmp_path):
    for name in ("mt80", "mt30"):
        [r] = convert([PUBLISHED[name]], tmp_path / name, source_format="legacy-pt")
        assert r.task_set == name and r.episodes == len(np.load(
            FIXTURES / f"{name}_chunk_tiny_expected.npz")["task"])  # fmt: skip
        assert_matches(tmp_path / name, name)
        assert verify_dataset(tmp_path / name).ok


# every layout written opcode by opcode (tiny chunk data); ZIP64 headers and LONG1 ints in turn
HANDWRITTEN = [
    (layout, name, big)
    for layout in ("td01", "published-mt80", "published-mt30", "td03")
    for name, big in (("mt80", False), ("mt30", True))
]


@pytest.mark.parametrize("layout, name, big", HANDWRITTEN)
def test_handwritten_layouts_convert_exactly(tmp_path, layout, name, big):
    """tensordict <= 0.1.2 (plain dict, `_names`), the published 7-key and 9-key states,
    0.3/0.4 (`tensordict._td.TensorDict` NEWOBJ + BUILD); `big`: every storage a ZIP64
    member (ZIP64 extra field in its local header) and every int pickled as LONG1, as the
    element count of a storage over 2^31 elements is."""
    path = handwritten_chunk(tmp_path / "chunk_0.pt", name, layout, zip64=big, long1=big)
    with zipfile.ZipFile(path) as z:
        ops = {op.name for op, _, _ in pickletools.genops(z.read("chunk_0/data.pkl"))}
        assert ("LONG1" in ops) == big and ("BININT1" in ops) != big
        assert all(len(i.extra) > 20 for i in z.infolist() if "/data/" in i.filename) or not big
    [r] = convert([path], tmp_path / "ds", source_format="legacy-pt")
    assert r.task_set == name
    assert_matches(tmp_path / "ds", name)


@pytest.mark.parametrize(
    "device, name", [(("cuda",), "cuda"), (("cuda", 3), "cuda:3"), (None, None)]
)
def test_cuda_and_unset_devices_are_accepted(tmp_path, device, name):
    path = handwritten_chunk(tmp_path / "chunk_0.pt", "mt80", "published-mt80", device=device)
    with TorchZip(path) as z:
        assert as_tensordict(z.load(), "").device == name
    convert([path], tmp_path / "ds")
    assert_matches(tmp_path / "ds", "mt80")


@pytest.mark.parametrize("kind", list(hostile_published_edits()))
def test_hostile_published_layout_variants_are_refused(tmp_path, kind, capsys):
    """One edit of the real published pickle each: a device with other arguments, or used
    anywhere but as a TensorDict's `_device`, or an unknown state key: one line naming the
    file, the class and why; nothing is written."""
    path, refusal = hostile_published_chunk(tmp_path / "chunk_0.pt", kind)
    with pytest.raises(UnsafePickleError, match=r"chunk_0\.pt: " + refusal):
        convert([path], tmp_path / "ds")
    assert cli(["convert", str(path), str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "ds").exists()


HOSTILE_HANDWRITTEN = {
    "0.1.x state with a _StringOnlyDict": (
        "td01",
        (
            b"}(X\x03\x00\x00\x00obs",
            b"ctensordict.utils\n_StringOnlyDict\n)\x81(X\x03\x00\x00\x00obs",
        ),
        r"tensordict\.tensordict\.TensorDict: _tensordict is a _StringOnlyDict, expected a dict",
    ),
    "0.3 state with a lock": (
        "td03",
        (b"ub.", b"X\n\x00\x00\x00_is_locked\x89ub."),
        r"tensordict\._td\.TensorDict: state has unexpected key\(s\) '_is_locked'",
    ),
    "0.3 TensorDict created with arguments": (
        "td03",
        (b"TensorDict\n)\x81", b"TensorDict\n(K\x01t\x81"),
        r"tensordict\._td\.TensorDict: created with arguments",
    ),
    "0.3 TensorDict built twice": (
        "td03",
        (b"ub.", b"ub}b."),
        r"tensordict\._td\.TensorDict: built twice",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE_HANDWRITTEN))
def test_hostile_handwritten_layout_variants_are_refused(tmp_path, kind):
    layout, (old, new), refusal = HOSTILE_HANDWRITTEN[kind]
    good = handwritten_chunk(tmp_path / "good.pt", "mt80", layout)
    path = rewrite_pickle(good, tmp_path / "chunk_0.pt", lambda p: p.replace(old, new, 1))
    with pytest.raises(UnsafePickleError, match=r"chunk_0\.pt: refuses to load " + refusal):
        convert([path], tmp_path / "ds")


@pytest.mark.parametrize("kind", list(hostile_edits(Path("m"))))
def test_hostile_2023_layout_variants_are_refused(tmp_path, kind, capsys):
    """One edit of the real 2023 pickle each: the allow-list refuses it, naming the file,
    the class and why; nothing runs and nothing is written."""
    marker = tmp_path / "pwned"
    path, refusal = hostile_chunk(tmp_path / "chunk_0.pt", kind, marker)
    with pytest.raises(UnsafePickleError, match=r"chunk_0\.pt: " + refusal):
        convert([path], tmp_path / "ds")
    assert cli(["convert", str(path), str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "ds").exists()


def test_a_pickle_truncated_inside_its_archive_is_a_damaged_file(tmp_path):
    path = truncated_pickle_chunk(tmp_path / "chunk_0.pt")
    with pytest.raises(DatasetError, match=r"chunk_0\.pt: damaged pickle \(.*download it again"):
        convert([path], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_filler_step_is_dropped_not_shifted(tmp_path):
    """action[e, t] / reward[e, t] must be the legacy index t+1 (the filler is index 0)."""
    with TorchZip(FIXTURES / "mt80_chunk_tiny.pt") as z:
        legacy = {k: np.array(v) for k, v in as_tensordict(z.load(), "").fields.items()}
    assert np.isnan(legacy["action"][:, 0]).all()  # the filler this test is about
    convert([FIXTURES / "mt80_chunk_tiny.pt"], tmp_path / "ds", source_format="legacy-pt")
    got = in_expected_order(stored_episodes(tmp_path / "ds"), legacy["task"][:, 0])
    np.testing.assert_array_equal(got["action"], legacy["action"][:, 1:])
    np.testing.assert_array_equal(got["reward"], legacy["reward"][:, 1:])
    assert not np.array_equal(got["action"][:, 1:], legacy["action"][:, 1:-1])  # not shifted
    assert got["obs"].shape[1] == got["action"].shape[1] + 1


def _save_chunk(path: Path, obs, action, reward, task) -> None:
    """A chunk as the original writes it: a TensorDict [episodes, T+1] saved with torch.save."""
    from tensordict import TensorDict

    n, steps = task.shape
    td = TensorDict(
        {
            "obs": torch.as_tensor(obs),
            "action": torch.as_tensor(action),
            "reward": torch.as_tensor(reward),
            "task": torch.as_tensor(task),
        },
        batch_size=[n, steps],
    )
    torch.save(td, path)


def _step_coded_chunk(n: int = 4, steps: int = 101, filler: float = 0.0):
    """mt80-shaped data where every value encodes its (episode, step): off-by-one shows."""
    e, t = np.meshgrid(np.arange(n), np.arange(steps), indexing="ij")
    code = (e * 1000 + t).astype(np.float32)
    obs = np.zeros((n, steps, 39), np.float32)
    obs[:, :, :24] = code[..., None]
    action = np.zeros((n, steps, 6), np.float32)
    action[:, :, :6] = code[..., None] / 10000
    reward = code.copy()
    action[:, 0], reward[:, 0] = filler, filler
    task = np.full((n, steps), 1, np.int64)  # walker-walk: 24 obs, 6 actions
    return obs, action, reward, task


def test_step_coded_chunk_aligns_action_t_with_obs_t(tmp_path):
    obs, action, reward, task = _step_coded_chunk()
    _save_chunk(tmp_path / "chunk.pt", obs, action, reward, task)
    convert([tmp_path / "chunk.pt"], tmp_path / "ds")
    got = stored_episodes(tmp_path / "ds")
    t = np.arange(100)
    # transition t goes obs[t] -> obs[t+1]; the legacy file stores its action/reward at t+1
    np.testing.assert_array_equal(got["obs"][:, :, 0] % 1000, np.tile(np.arange(101), (4, 1)))
    np.testing.assert_array_equal(got["reward"] % 1000, np.tile(t + 1, (4, 1)))
    np.testing.assert_allclose(got["action"][0, :, 0] * 10000, t + 1, rtol=1e-6)


def test_old_tensordict_layout_loads_without_tensordict(tmp_path, monkeypatch):
    """Chunks from 2023 pickle `tensordict.tensordict.TensorDict` with its `__dict__` state."""
    obs, action, reward, task = _step_coded_chunk(n=3)

    class OldTensorDict:
        pass

    class StringOnlyDict(dict):
        pass

    for cls, module, name in (
        (OldTensorDict, "tensordict.tensordict", "TensorDict"),
        (StringOnlyDict, "tensordict.utils", "_StringOnlyDict"),
    ):
        cls.__module__, cls.__qualname__, cls.__name__ = module, name, name
        fake = types.ModuleType(module)
        setattr(fake, name, cls)
        monkeypatch.setitem(sys.modules, module, fake)
    monkeypatch.setitem(sys.modules, "tensordict", types.ModuleType("tensordict"))
    td = OldTensorDict()
    td.__dict__.update(
        _tensordict=StringOnlyDict(
            obs=torch.as_tensor(obs),
            action=torch.as_tensor(action),
            reward=torch.as_tensor(reward),
            task=torch.as_tensor(task),
        ),
        _batch_size=torch.Size([3, 101]),
        _device=None,
        _is_shared=False,
        _is_memmap=False,
        _is_locked=False,
        _td_dim_names=[None, None],
    )
    torch.save(td, tmp_path / "old.pt")
    monkeypatch.undo()
    with zipfile.ZipFile(tmp_path / "old.pt") as z:  # really the old layout
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"tensordict.tensordict" in pkl and b"_reductions" not in pkl
    code = (
        "import sys; sys.modules['tensordict'] = None\n"  # any tensordict import fails
        "from tdmpc2_data.convert import convert\n"
        f"convert([{str(tmp_path / 'old.pt')!r}], {str(tmp_path / 'ds')!r})\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    got = stored_episodes(tmp_path / "ds")
    np.testing.assert_array_equal(got["obs"], obs)
    np.testing.assert_array_equal(got["action"], action[:, 1:])
    np.testing.assert_array_equal(got["reward"], reward[:, 1:])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrapped", [True, False])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, wrapped):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"obs": _Evil(marker)}, protocol=2)
    assert b"system" in payload
    path = tmp_path / "chunk_0.pt"
    if wrapped:  # a torch zip archive around the hostile pickle
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("chunk_0/data.pkl", payload)
            z.writestr("chunk_0/byteorder", "little")
        with pytest.raises(
            UnsafePickleError, match=r"chunk_0.pt: refuses to load (posix|os)\.system"
        ):
            convert([path], tmp_path / "ds")
    else:
        path.write_bytes(payload)
        with pytest.raises(ValueError, match="not a torch zip archive"):
            convert([path], tmp_path / "ds")
    assert not marker.exists()
    assert not (tmp_path / "ds").exists()


def test_tasks_filter_keeps_ids_and_reruns_skip_or_complete(tmp_path, capsys):
    src, dst = FIXTURES / "mt80_chunk_tiny.pt", tmp_path / "ds"
    [r] = convert([src], dst, tasks="door-open")
    assert r.episodes == 2
    ds = open_dataset(dst)
    assert ds.task_counts() == {41: 2} and ds.tasks[41] == "mw-door-open"
    [r] = convert([src], dst)  # the rest of the chunk, not door-open again
    assert r.episodes == 4 and open_dataset(dst).task_counts() == {1: 2, 26: 2, 41: 2}
    [r] = convert([src], dst)
    assert r.skipped and open_dataset(dst).num_episodes == 6
    assert cli(["convert", str(src), str(dst), "--from", "legacy-pt"]) == 0
    assert "already converted, skipped" in capsys.readouterr().out


def test_episodes_outside_the_task_set_are_refused_or_dropped_only_when_asked(tmp_path, capsys):
    """The tiny mt80 chunk into mt30: its 2 mw-door-open episodes are not in mt30. The
    conversion is one line naming them and writes nothing; --drop-other-tasks converts the
    rest and says how many were left out."""
    src, dst = FIXTURES / "mt80_chunk_tiny.pt", tmp_path / "ds"
    assert cli(["convert", str(src), str(dst), "--task-set", "mt30"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "mt80_chunk_tiny.pt: 2 episodes of mw-door-open (2) not in --task-set mt30" in err
    assert "--drop-other-tasks" in err and not dst.exists()
    assert cli(["convert", str(src), str(dst), "--task-set", "mt30", "--drop-other-tasks"]) == 0
    assert "4 episodes" in (out := capsys.readouterr().out)
    assert "left out 2 episodes of mw-door-open (2) (not in mt30)" in out
    ds = open_dataset(dst)
    assert ds.tasks == TASK_SETS["mt30"] and ds.task_counts() == {1: 2, 26: 2}
    assert cli(["convert", str(src), str(tmp_path / "x"), "--from", "npz", "--tasks",
                "walker-walk", "--drop-other-tasks"]) == 2  # fmt: skip
    assert "--drop-other-tasks applies to --from legacy-pt" in capsys.readouterr().err


def test_failed_conversion_leaves_nothing_and_a_killed_one_is_redone(tmp_path, monkeypatch):
    src, dst = FIXTURES / "mt80_chunk_tiny.pt", tmp_path / "ds"
    calls = []
    real_add = legacy_pt._add_slice

    def add_then_fail(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the conversion midway
        return real_add(*args)

    monkeypatch.setattr(legacy_pt, "_add_slice", add_then_fail)
    with pytest.raises(KeyboardInterrupt):
        legacy_pt.convert_chunk(src, dst, episodes_per_shard=1)
    assert open_dataset(dst).num_episodes == 0  # the shard already written was removed
    monkeypatch.undo()

    # a hard kill (no cleanup) after the first slice's shards are on disk
    kill = (
        "import os, sys\n"
        "from tdmpc2_data.convert import legacy_pt\n"
        "real, calls = legacy_pt._add_slice, []\n"
        "def add(*a):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2: os._exit(9)\n"
        "    return real(*a)\n"
        "legacy_pt._add_slice = add\n"
        "legacy_pt.convert_chunk(sys.argv[1], sys.argv[2], episodes_per_shard=1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", kill, str(src), str(dst)])
    assert proc.returncode == 9
    attrs = json.loads((dst / "zarr.json").read_text())["attributes"]
    assert not attrs["sources"][-1]["complete"] and len(attrs["shards"]) == 2
    [r] = convert([src], dst)
    assert r.episodes == 6
    ds = open_dataset(dst)
    assert ds.num_episodes == 6 and ds.task_counts() == {1: 2, 26: 2, 41: 2}
    assert [s["complete"] for s in ds.attrs["sources"]] == [True]
    assert verify_dataset(dst).ok


def test_nonzero_padding_in_a_chunk_is_refused(tmp_path):
    obs, action, reward, task = _step_coded_chunk()
    obs[1, 7, 30] = 0.5  # walker-walk has 24 obs dims
    _save_chunk(tmp_path / "chunk.pt", obs, action, reward, task)
    with pytest.raises(
        ValueError, match=r"chunk.pt: obs\[0:4, \.\.\., 24:\] is not zero.*walker-walk"
    ):
        convert([tmp_path / "chunk.pt"], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # no empty dataset is left behind


def test_unknown_layout_needs_a_task_set(tmp_path):
    obs, action, reward, task = _step_coded_chunk(steps=51)
    _save_chunk(tmp_path / "chunk.pt", obs, action, reward, task)
    with pytest.raises(ValueError, match="51 steps with 39-dim obs match neither.*--task-set"):
        convert([tmp_path / "chunk.pt"], tmp_path / "ds")
    [r] = convert([tmp_path / "chunk.pt"], tmp_path / "ds", task_set="mt80")
    assert r.episodes == 4 and open_dataset(tmp_path / "ds").shards[0].episode_length == 50


def test_dispatch_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="pass --from"):
        guess_format("buffer.bin")
    assert cli(["convert", "a.npz", str(tmp_path / "ds"), "--from", "shards"]) == 2
    assert "a.npz a shard dataset?" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
    assert cli(["convert", str(tmp_path / "ds")]) == 2


CONVERT_AND_MEASURE = """
import resource, sys
from tdmpc2_data.convert import convert
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    convert([sys.argv[1]], sys.argv[2], source_format="legacy-pt")
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) >> 10)
"""


def test_compressed_tensor_records_are_refused_unread(tmp_path, capsys):
    """torch.save stores every member uncompressed; a chunk with a DEFLATE-compressed one
    (5 MB can inflate to 1 GiB) is refused in one line naming the file and the member,
    before reading it: converting such a bomb grows the process by +35 MB (imports; before: +2087 MB)."""
    small = deflated(FIXTURES / "mt80_chunk_tiny.pt", tmp_path / "chunk_0.pt")
    assert cli(["convert", str(small), str(tmp_path / "ds"), "--from", "legacy-pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tdmpc2-data convert: error: {small}: archive member ") and (
        "/data/0 is compressed (zip method 8); torch.save stores every member uncompressed" in err
    ), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "ds").exists()

    (tmp_path / "bomb").mkdir()
    bomb = deflate_bomb(tmp_path / "bomb" / "chunk_0.pt")
    run = subprocess.run([sys.executable, "-c", CONVERT_AND_MEASURE, str(bomb), str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    said, grown = run.stdout.splitlines()
    assert said.startswith(f"DatasetError: {bomb}: archive member chunk_0/data/0 is compressed")
    assert int(grown) < 150, f"grew by {grown} MB"
