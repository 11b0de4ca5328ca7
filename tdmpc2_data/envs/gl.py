"""Which OpenGL backend MuJoCo renders with, chosen before MuJoCo is imported.

MuJoCo, dm_control and PyOpenGL read ``MUJOCO_GL`` once, at import. Left unset, dm_control
picks GLFW, which on a machine without a display dies at the first frame in a raw
``mujoco.FatalError``. `prepare_rendering` runs where rendering is requested
(``make_env(..., render_mode="rgb_array")``, ``evaluate(video_dir=...)``, ``tdmpc2-eval
--video``) and only there, so a run without video imports MuJoCo exactly as before.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence

from tdmpc2_data.envs.base import SimulatorUnavailableError

#: headless backends in order of preference, with the shared libraries each one loads
HEADLESS: dict[str, tuple[str, ...]] = {
    "egl": ("libEGL.so.1", "libEGL.so"),
    "osmesa": ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"),
}
#: what to install for each (Debian/Ubuntu package names)
_PACKAGES = {"egl": "libegl1", "osmesa": "libosmesa6"}
#: modules that read MUJOCO_GL at import: once one is loaded, setting it changes nothing
_READERS = ("mujoco", "dm_control._render", "OpenGL")
#: the thread pool of Mesa's software renderer (llvmpipe, behind EGL and OSMesa without a
#: GPU), see `prepare_rendering`
RENDER_THREADS = {"LP_NUM_THREADS": "1"}

_checked: set[str] = set()  # backends whose context creation already worked in this process


class OpenGLUnavailableError(SimulatorUnavailableError):
    """No OpenGL backend can render here; the message says what to install or set."""


def _loadable(names: Sequence[str]) -> str | None:
    """The first of these shared libraries that loads, or None."""
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def _has_display(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def choose_backend(
    environ: Mapping[str, str], backends: Mapping[str, Sequence[str]] = HEADLESS
) -> str | None:
    """The ``MUJOCO_GL`` value to set: None when the environment decides already (a display,
    or a ``MUJOCO_GL`` of the user's whose library loads), else the first of ``backends``
    whose library loads. Raises `OpenGLUnavailableError` (one line) when the user's choice
    cannot load or no headless library does. ``backends`` maps a name to the library file
    names tried, so a machine without them can be described without mocking anything."""
    chosen = (environ.get("MUJOCO_GL") or "").strip().lower()
    if chosen:
        if chosen == "glfw" and not _has_display(environ):
            raise OpenGLUnavailableError(
                "MUJOCO_GL=glfw needs a display, and DISPLAY/WAYLAND_DISPLAY are unset; set "
                "MUJOCO_GL=egl or osmesa (or unset it to choose one automatically)."
            )
        if chosen in backends and _loadable(backends[chosen]) is None:
            others = [b for b in backends if b != chosen and _loadable(backends[b])]
            hint = f"set MUJOCO_GL={others[0]}" if others else f"install {_PACKAGES.get(chosen)}"
            raise OpenGLUnavailableError(
                f"MUJOCO_GL={chosen}: cannot load {' or '.join(backends[chosen])}; {hint} "
                "(or unset MUJOCO_GL to choose automatically)."
            )
        return None
    if _has_display(environ):
        return None  # dm_control's own choice (GLFW) works with a display
    for name, libraries in backends.items():
        if _loadable(libraries) is not None:
            return name
    options = " or ".join(f"{b} ({backends[b][0]}: apt install {_PACKAGES.get(b, b)})"
                          for b in backends)  # fmt: skip
    raise OpenGLUnavailableError(
        f"no OpenGL for rendering: no display (DISPLAY/WAYLAND_DISPLAY unset) and no headless "
        f"library loads; install one and set MUJOCO_GL={' or '.join(backends)}: {options}."
    )


def prepare_rendering(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Make MuJoCo rendering work here, or fail now in one line: with neither a display nor a
    user's ``MUJOCO_GL``, set it to a headless backend (`choose_backend`); then create one
    OpenGL context to prove the backend works. Returns the backend (None: the display's
    default, or MuJoCo was imported already and its choice stands).

    It also sets ``RENDER_THREADS`` unless set: Mesa's software renderer (llvmpipe, what EGL
    and OSMesa use without a GPU) otherwise starts a render thread per core, which compete
    with planning for the cores: on 2 cores a step's planning got 223 ms slower with two, more
    than the 101 ms frame, and stayed within the noise with one (bench/RESULTS.md)."""
    user = (environ.get("MUJOCO_GL") or "").strip().lower()
    if not user and any(m in sys.modules for m in _READERS):
        return None
    backend = choose_backend(environ) or user or None  # the user's is checked, not replaced
    if backend is None:
        return None
    if not user:
        environ["MUJOCO_GL"] = backend
    for key, value in RENDER_THREADS.items():
        environ.setdefault(key, value)
    if backend not in _checked:
        _check_context(backend)
        _checked.add(backend)
    return backend


def _check_context(backend: str) -> None:
    """Create and free a 1x1 context with MuJoCo's own backend module, so that a backend
    whose library loads but cannot render (no device, a bad driver) fails here in one line."""
    try:
        import mujoco

        context = mujoco.GLContext(1, 1)
        context.make_current()
        context.free()
    except Exception as exc:  # noqa: BLE001 - any failure means this backend cannot render
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise OpenGLUnavailableError(
            f"MUJOCO_GL={backend}: cannot create an OpenGL context ({detail}); set "
            f"MUJOCO_GL to another backend ({', '.join(b for b in HEADLESS if b != backend)}) "
            "or unset it to choose automatically."
        ) from None
