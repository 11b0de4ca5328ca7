"""Progress bars of both packages, by tqdm's and huggingface_hub's conventions: drawn on a
terminal (or in a notebook) only, so that a log file holds no carriage-return refreshes;
switched off by ``TDMPC2_DISABLE_PROGRESS_BARS=1`` (as ``HF_HUB_DISABLE_PROGRESS_BARS``),
``TQDM_DISABLE=1`` or ``HF_HUB_DISABLE_PROGRESS_BARS=1``, and on without a terminal by
``TDMPC2_DISABLE_PROGRESS_BARS=0``. Every bar goes through `progress_bar`; Lightning's
through `bars_enabled`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

SWITCH = "TDMPC2_DISABLE_PROGRESS_BARS"
SWITCHES = (SWITCH, "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")


def bars_enabled() -> bool:
    """Whether progress bars are drawn: no switch in ``SWITCHES`` is set to 1 (true, yes,
    on), and stderr is a terminal or a notebook's output or ``SWITCH`` is 0 (false, no, off)."""
    values = [os.environ.get(n, "").strip().lower() for n in SWITCHES]
    if any(v in ("1", "true", "yes", "on") for v in values):
        return False
    if values[0] in ("0", "false", "no", "off"):
        return True
    stream = sys.stderr
    if stream is None:
        return False
    if type(stream).__module__.startswith("ipykernel"):  # tqdm.auto draws a widget there
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True,
                 **kwargs: Any) -> tqdm:  # fmt: skip
    """``tqdm(iterable, **kwargs)``, disabled unless ``enabled`` and `bars_enabled`."""
    return tqdm(iterable, disable=not (enabled and bars_enabled()), **kwargs)


def match_hub_bars() -> None:
    """Draw huggingface_hub's own bars (``snapshot_download``'s per-file bars) exactly when
    ours are drawn; a command calls it once at its start."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if bars_enabled() else disable_progress_bars)()
