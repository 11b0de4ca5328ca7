"""Model CLIs: `tdmpc2-pretrain`, `tdmpc2-finetune`, `tdmpc2-train`, `tdmpc2-eval`.

Thin wrappers over library functions; each parser documents itself with examples.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

SIZES = ["1M", "5M", "19M", "48M", "317M"]


def _size(value: str) -> str:
    """Accept `5M` and `5`."""
    size = value.upper() if value.upper().endswith("M") else f"{value}M"
    if size not in SIZES:
        raise argparse.ArgumentTypeError(f"size must be one of {', '.join(SIZES)}; got {value!r}")
    return size


def _parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _not_implemented(prog: str) -> int:
    print(f"{prog}: not implemented yet.", file=sys.stderr)
    return 2


def pretrain_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tdmpc2-pretrain",
        "Pretrain a multitask world model offline on a shard dataset (Lightning).",
        "  tdmpc2-pretrain --size 1M --data data/quickstart --max-steps 200\n"
        "  tdmpc2-pretrain --size 317M --data mt80 --devices 8 --strategy fsdp --precision bf16-mixed",
    )
    p.add_argument("--size", type=_size, default="5M", help="model size: 1M 5M 19M 48M 317M")
    p.add_argument(
        "--data", required=True, help="dataset dir, hf://datasets/OWNER/NAME, mt80 or mt30"
    )
    p.add_argument("--recipe", help="YAML recipe (recipes/...yaml); flags override it")
    p.add_argument("--devices", default="auto")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp"])
    p.add_argument("--precision", default="32-true", help="e.g. 32-true, bf16-mixed")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--resume", help="checkpoint path, or 'auto' for the last one in --out")
    p.add_argument("--out", default="runs/pretrain")
    return p


def finetune_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tdmpc2-finetune",
        "Finetune a pretrained world model online on a (held-out) task.",
        "  tdmpc2-finetune --task door-open --checkpoint runs/pretrain/final --steps 20000",
    )
    p.add_argument("--task", required=True)
    p.add_argument(
        "--checkpoint", required=True, help="Hub repo, save_pretrained dir or legacy .pt"
    )
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--out", default="runs/finetune")
    p.add_argument("--seed", type=int, default=0)
    return p


def train_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tdmpc2-train",
        "Train a single-task agent online from scratch; its replay buffer is saved as shards.",
        "  tdmpc2-train --task walker-walk --steps 100000",
    )
    p.add_argument("--task", required=True)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--size", type=_size, default="5M")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--seed", type=int, default=0)
    return p


def eval_parser() -> argparse.ArgumentParser:
    p = _parser(
        "tdmpc2-eval",
        "Evaluate a checkpoint with MPPI planning (eval mode) on a task.",
        "  tdmpc2-eval --checkpoint mt80-5M --task walker-walk --episodes 10",
    )
    p.add_argument(
        "--checkpoint", required=True, help="Hub repo, save_pretrained dir or legacy .pt"
    )
    p.add_argument("--task", required=True)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--video", help="directory for episode videos")
    p.add_argument("--seed", type=int, default=0)
    return p


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    pretrain_parser().parse_args(argv)
    return _not_implemented("tdmpc2-pretrain")


def finetune_main(argv: Sequence[str] | None = None) -> int:
    finetune_parser().parse_args(argv)
    return _not_implemented("tdmpc2-finetune")


def train_main(argv: Sequence[str] | None = None) -> int:
    train_parser().parse_args(argv)
    return _not_implemented("tdmpc2-train")


def eval_main(argv: Sequence[str] | None = None) -> int:
    eval_parser().parse_args(argv)
    return _not_implemented("tdmpc2-eval")
