"""The update reproduces the original implementation: three consecutive updates of each legacy
fixture (``<model>_update.pt``, made by the original's ``TDMPC2._update`` with dropout 0 and
``torch.manual_seed(1000 + k)`` before update k; see shared/fixtures/legacy/README.md) give
the same losses (1e-4 relative) and the same weights, through ``TDMPC2.update`` and through a
real Lightning Trainer running ``TDMPC2Module``."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from legacy_fixtures import FIXTURES

from tdmpc2_data.batch import Batch
from tdmpc2_model import TDMPC2
from tdmpc2_model.training.pretrain import TDMPC2Module

MODELS = ["cheetah-run_1M", "mt30_1M"]
INFO = ["consistency_loss", "reward_loss", "value_loss", "total_loss", "grad_norm", "pi_loss",
        "pi_grad_norm", "pi_entropy", "pi_scaled_entropy", "pi_scale"]  # fmt: skip
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="legacy fixtures not found")


@pytest.fixture(scope="module", params=MODELS)
def case(request) -> tuple[str, dict[str, torch.Tensor]]:
    name = request.param
    return name, torch.load(FIXTURES / f"{name}_update.pt", weights_only=True)


def start(name: str, ref: dict[str, torch.Tensor]) -> TDMPC2:
    """The fixture's starting model with the settings of its updates (dropout 0, batch 64)."""
    batch_size, horizon = int(ref["batch_size"]), int(ref["horizon"])
    path = FIXTURES / f"{name}_state_dict.pt"
    return TDMPC2.from_pretrained(path, dropout=0.0, batch_size=batch_size, horizon=horizon)


def batches(agent: TDMPC2, ref: dict[str, torch.Tensor]) -> list[Batch]:
    out = []
    for k in range(int(ref["updates"])):
        size = ref[f"obs_{k}"].shape[1]
        task = ref.get(f"task_{k}", torch.zeros(size, dtype=torch.long))
        out.append(Batch(ref[f"obs_{k}"], ref[f"action_{k}"], ref[f"reward_{k}"], task))
    return out


def check(name: str, ref: dict, infos: list[dict[str, float]], before: dict, after: dict) -> None:
    for k, info in enumerate(infos):
        for key in INFO:
            want = ref[f"info_{k}_{key}"].item()
            assert info[key] == pytest.approx(want, rel=1e-4), f"{name} update {k}: {key}"
    weights = {k.removeprefix("weights/"): v for k, v in ref.items() if k.startswith("weights/")}
    assert set(weights) <= set(after)
    for key, want in weights.items():
        moved = (want - before[key]).norm()
        if moved == 0:  # buffers (action masks)
            torch.testing.assert_close(after[key], want, rtol=0, atol=0, msg=key)
            continue
        off = (after[key] - want).norm() / moved  # measured: at most 1.5e-4 (cheetah-run)
        assert off < 5e-4, f"{name}: {key} is {off:.1e} of the update's size off the original"


class _Seeds(L.Callback):
    """``torch.manual_seed(1000 + k)`` immediately before update k, as the fixture was made."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        torch.manual_seed(1000 + batch_idx)


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.infos: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        logged = trainer.callback_metrics
        self.infos.append({key: logged[f"train/{key}"].item() for key in INFO})


def test_agent_update_reproduces_the_original(case):
    name, ref = case
    agent = start(name, ref)
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    infos = []
    for k, batch in enumerate(batches(agent, ref)):
        torch.manual_seed(1000 + k)
        infos.append(agent.update(batch))
    check(name, ref, infos, before, agent.model.state_dict())


def test_lightning_step_reproduces_the_original(case):
    name, ref = case
    agent = start(name, ref)
    before = {k: v.clone() for k, v in agent.model.state_dict().items()}
    module = TDMPC2Module.from_agent(agent)
    losses = _Losses()
    trainer = L.Trainer(max_steps=int(ref["updates"]), accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[_Seeds(), losses])  # fmt: skip
    trainer.fit(module, train_dataloaders=iter(batches(agent, ref)))
    assert trainer.global_step == int(ref["updates"])
    check(name, ref, losses.infos, before, module.agent.model.state_dict())
