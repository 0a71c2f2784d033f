"""CUDA graphs: the captured training step and the captured planning imagination compute what eager code does.

These need a CUDA device and are skipped without one (CI has none); they run on a lent GPU machine with
``pytest --noconftest tests/test_cuda_graph.py`` (no simulator needed: the batches are synthetic tensors)."""

import pytest
import torch

from replay.planning import SHAPING, CapturedRewards, imagined_rewards
from teleworld.errors import TeleworldError
from train.model import WorldModel, WorldModelConfig
from train.objectives import Objective, ObjectiveConfig
from train.step import GraphedStep, Step

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
B, T, S, P, G, CONTEXT, ROLLOUT, FRAMES = 4, 8, 32, 8, 3, 3, 10, 4
OBJECTIVE = ObjectiveConfig(openloop_steps=3, rollout_steps=ROLLOUT, rollout_context=CONTEXT, rollout_frames=FRAMES,
                            foreground_weight=10.0)


def model_and_optimizer(device: torch.device, seed: int = 0) -> tuple[WorldModel, torch.optim.Optimizer]:
    """The small recipe's parts at toy sizes: composite decoder, blend, standard heads, goal-conditioned reward."""
    torch.manual_seed(seed)
    cfg = WorldModelConfig(image_size=S, action_dim=2, proprio_dim=P, contact_dim=G, depth=8, deter=32, hidden=32,
                           groups=4, classes=4, composite=True, blend=True, blend_horizon=ROLLOUT, reward=True,
                           goal_dim=2)
    model = WorldModel(cfg)
    model.set_proprio_stats(torch.zeros(P), torch.ones(P), torch.arange(P) < P // 2)
    model.set_reward_stats(0.0, 1.0, torch.zeros(2), torch.ones(2))
    model.to(device).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-6)


def batch(seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch with every key the objective reads, shaped as the loader's."""
    g = torch.Generator().manual_seed(seed)
    span = CONTEXT + ROLLOUT
    steps = torch.stack([torch.randperm(ROLLOUT, generator=g)[:FRAMES].sort().values for _ in range(B)])
    out = {
        "image": torch.rand(B, T, 3, S, S, generator=g),
        "reference": torch.rand(B, 3, S, S, generator=g),
        "action": torch.rand(B, span, 2, generator=g) * 2 - 1,
        "proprio": torch.randn(B, T, P, generator=g),
        "contact": (torch.rand(B, T, G, generator=g) > 0.5).float(),
        "reward": torch.randn(B, T, generator=g),
        "goal": torch.randn(B, 2, generator=g),
        "rollout_image": torch.rand(B, FRAMES, 3, S, S, generator=g),
        "rollout_step": steps + CONTEXT,
        "span_proprio": torch.randn(B, span, P, generator=g),
        "span_contact": (torch.rand(B, span, G, generator=g) > 0.5).float(),
        "span_reward": torch.randn(B, span, generator=g),
    }
    return {k: v.to(device) for k, v in out.items()}


@cuda
@pytest.mark.parametrize("bf16, rel", [(False, 1e-3), (True, 1e-2)])
def test_captured_step_trains_as_the_eager_step_does_and_refuses_other_shapes(bf16, rel):
    device = torch.device("cuda")
    batches = [batch(i, device) for i in range(4)]
    model, optimizer = model_and_optimizer(device)
    eager = Step(Objective(model, OBJECTIVE), optimizer, 100.0, bf16, device)
    torch.manual_seed(1)
    eager_losses = [eager(b, 1e-3)[0].item() for b in batches]

    model2, optimizer2 = model_and_optimizer(device)
    initial = [p.detach().clone() for p in model2.parameters()]
    graphed = GraphedStep(Objective(model2, OBJECTIVE), optimizer2, 100.0, bf16, device, batches[0])
    for p, before in zip(model2.parameters(), initial):  # the warm-up steps were undone
        torch.testing.assert_close(p.detach(), before)
    torch.manual_seed(1)
    assert [graphed(b, 1e-3)[0].item() for b in batches] == pytest.approx(eager_losses, rel=rel)
    if not bf16:
        for p, q in zip(model.parameters(), model2.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    with pytest.raises(TeleworldError, match="shaped like"):
        graphed({k: v[:2] for k, v in batches[0].items()}, 1e-3)


@cuda
def test_captured_imagination_scores_as_the_eager_one():
    device = torch.device("cuda")
    model, _ = model_and_optimizer(device)
    model.eval()
    captured = CapturedRewards()
    goal = torch.tensor([0.1, -0.2], device=device)
    with torch.no_grad():
        for seed, n in ((0, 256), (1, 256), (2, 1)):  # a second call of a shape reads its new inputs
            g = torch.Generator().manual_seed(seed)
            state = {"deter": torch.randn(1, 32, generator=g), "stoch": torch.rand(1, 16, generator=g),
                     "logits": torch.randn(1, 4, 4, generator=g)}
            state = {k: v.to(device).expand(n, *v.shape[1:]) for k, v in state.items()}
            actions = (torch.rand(n, 16, 2, generator=g) * 2 - 1).to(device)
            anchor = (torch.randn(1, P, generator=g).to(device), torch.randn(1, P, generator=g).to(device))
            expected = imagined_rewards(model, state, actions, goal, SHAPING["push"], 1.0, anchor)
            got = captured(model, state, actions, goal, SHAPING["push"], 1.0, anchor)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert len(captured.graphs) == 2  # one graph per batch shape
