"""Where the files written by the original implementation are: ``shared/fixtures/legacy``
beside the checkout (found from a git worktree as well)."""

from pathlib import Path

FIXTURES = next(
    (p / "shared" / "fixtures" / "legacy" for p in Path(__file__).resolve().parents
     if (p / "shared" / "fixtures" / "legacy").is_dir()),
    Path("shared/fixtures/legacy"),
)  # fmt: skip
