"""Where the files written by the original implementation are: ``$TDMPC2_LEGACY_FIXTURES``,
else ``shared/fixtures/legacy`` beside the checkout (found from a git worktree as well), else
the workplace's copy at ``/work/shared/fixtures/legacy`` (a fresh clone elsewhere, as CI)."""

import os
from pathlib import Path

_CANDIDATES = [
    *(
        [Path(os.environ["TDMPC2_LEGACY_FIXTURES"])]
        if "TDMPC2_LEGACY_FIXTURES" in os.environ
        else []
    ),
    *(p / "shared" / "fixtures" / "legacy" for p in Path(__file__).resolve().parents),
    Path("/work/shared/fixtures/legacy"),
]
FIXTURES = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[-1])
