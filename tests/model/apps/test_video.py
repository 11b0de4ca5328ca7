"""Videos on a machine without a display: `tdmpc2-eval --video` picks a headless OpenGL
backend itself (egl, else osmesa), and a backend that cannot work is one line naming
MUJOCO_GL. MuJoCo reads MUJOCO_GL once, at import, hence the subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tdmpc2_data.envs.gl import HEADLESS, OpenGLUnavailableError, _loadable, choose_backend

TASK = "cartpole-balance"
MISSING = {"egl": ("libEGL-not-here.so.1",), "osmesa": ("libOSMesa-not-here.so.8",)}


def headless_env(**extra: str) -> dict[str, str]:
    """This process's environment without a display or a MUJOCO_GL choice, plus ``extra``."""
    drop = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY", "LP_NUM_THREADS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny saved cartpole model with a small planner (as tests/system/test_damage.py's)."""
    from tdmpc2_model import TDMPC2, TDMPC2Config

    agent = TDMPC2(TDMPC2Config(size="1M", tasks=TASK, num_samples=32, num_elites=4,
                                num_pi_trajs=4, iterations=1))  # fmt: skip
    return agent.save_pretrained(tmp_path_factory.mktemp("video") / "model")


def run_eval(model: Path, video: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("tdmpc2-eval")  # this environment's, not PATH's
    argv = [str(script), "--checkpoint", str(model), "--task", TASK, "--episodes", "1",
            "--video", str(video)]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_eval_video_without_display_or_mujoco_gl_writes_an_mp4(model, tmp_path):
    import imageio.v3 as iio

    try:
        expected = choose_backend({})
    except OpenGLUnavailableError as exc:
        pytest.skip(f"no headless OpenGL library on this machine: {exc}")
    result = run_eval(model, tmp_path / "videos", headless_env())
    assert result.returncode == 0, result.stderr
    video = tmp_path / "videos" / f"{TASK}-0.mp4"
    frames = iio.imread(video)  # every frame, decoded by imageio-ffmpeg
    assert frames.shape == (500, 384, 384, 3), frames.shape  # one frame per agent step
    assert frames.std() > 5  # a scene, not a blank buffer
    assert expected in ("egl", "osmesa")


@pytest.mark.parametrize("kind", ["unloadable", "unknown"])
def test_a_mujoco_gl_that_cannot_work_is_one_line_naming_it(model, tmp_path, kind):
    if kind == "unloadable":
        backend = next((b for b, libs in HEADLESS.items() if _loadable(libs) is None), None)
        if backend is None:
            pytest.skip("every headless backend loads here")
    else:
        backend = "notabackend"
    result = run_eval(model, tmp_path / "videos", headless_env(MUJOCO_GL=backend))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("tdmpc2-eval: error: ") and f"MUJOCO_GL={backend}" in lines[0]
    assert not list((tmp_path / "videos").glob("*.mp4"))


def test_no_loadable_library_is_one_line_saying_what_to_install_or_set():
    with pytest.raises(OpenGLUnavailableError) as info:
        choose_backend({}, backends=MISSING)
    message = str(info.value)
    assert "\n" not in message and "MUJOCO_GL=egl or osmesa" in message
    assert "libEGL-not-here.so.1" in message and "libOSMesa-not-here.so.8" in message


def test_the_choice_follows_the_environment():
    assert choose_backend({"DISPLAY": ":0"}, backends=MISSING) is None  # the display's GLFW
    assert choose_backend({"WAYLAND_DISPLAY": "wayland-0"}, backends=MISSING) is None
    fallback = {"egl": MISSING["egl"], "osmesa": HEADLESS["egl"]}  # the second one loads
    if _loadable(HEADLESS["egl"]) is not None:
        assert choose_backend({}, backends=fallback) == "osmesa"
    with pytest.raises(OpenGLUnavailableError, match="MUJOCO_GL=osmesa: cannot load"):
        choose_backend({"MUJOCO_GL": "osmesa", "DISPLAY": ":0"}, backends=MISSING)
    with pytest.raises(OpenGLUnavailableError, match="MUJOCO_GL=glfw needs a display"):
        choose_backend({"MUJOCO_GL": "glfw"}, backends=MISSING)
    assert choose_backend({"MUJOCO_GL": "glfw", "DISPLAY": ":0"}, backends=MISSING) is None


def test_runs_without_video_import_mujoco_as_before():
    """Only rendering chooses a backend: a plain env leaves MUJOCO_GL (and the render
    threads) alone."""
    script = textwrap.dedent(
        """
        import os
        from tdmpc2_data.envs import make_env
        env = make_env("cartpole-balance")
        env.reset()
        print("MUJOCO_GL" in os.environ, "LP_NUM_THREADS" in os.environ)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], env=headless_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.stdout.split() == ["False", "False"], result.stderr


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("2", "2")])
def test_rendering_picks_the_backend_and_one_render_thread_unless_set(preset, expected):
    """Mesa's llvmpipe starts a render thread per core, which slowed planning by more than a
    frame costs (bench/render.py): one unless LP_NUM_THREADS says otherwise."""
    try:
        backend = choose_backend({})
    except OpenGLUnavailableError as exc:
        pytest.skip(f"no headless OpenGL library on this machine: {exc}")
    script = textwrap.dedent(
        """
        import os
        from tdmpc2_data.envs import make_env
        env = make_env("cartpole-balance", render_mode="rgb_array")
        env.reset()
        assert env.render().std() > 5
        print(os.environ["MUJOCO_GL"], os.environ["LP_NUM_THREADS"])
        """
    )
    env = headless_env(**({} if preset is None else {"LP_NUM_THREADS": preset}))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.stdout.split() == [backend, expected], result.stderr
