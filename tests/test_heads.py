"""Proprio and contact heads: standardised with the training split's statistics (saved with the weights), weighted
so they count next to the image error, trained on imagined steps too; older checkpoints still load."""

import numpy as np
import pytest
import torch

from recorder import EpisodeStore
from teleworld.errors import TeleworldError
from train.checkpoint import load_model, read_checkpoint
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train
from train.model import PROPRIO_STD_FLOOR, WorldModel, WorldModelConfig, symexp
from train.objectives import Objective, ObjectiveConfig
from recorder.windows import episode_starts


@pytest.fixture(scope="module")
def data(push_store):
    store = EpisodeStore.open(push_store)
    return EpisodeArrays(store, DataSpec.from_store(store))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(data, make_config("tiny", steps=2), out, show_progress=False), out


def test_proprio_statistics_are_the_training_episodes_and_travel_with_the_weights(data, run, push_store):
    result, out = run
    ckpt = read_checkpoint(out)
    ends, starts = data.episode_ends, episode_starts(data.episode_ends)
    steps = np.concatenate([np.arange(starts[e], ends[e]) for e in ckpt["train_episodes"]])
    mean, std = data.proprio[steps].mean(0), data.proprio[steps].std(0)
    assert set(ckpt["val_episodes"]).isdisjoint(ckpt["train_episodes"])
    model = result["model"]
    assert np.allclose(model.proprio_mean.numpy(), mean, atol=1e-5)
    assert np.allclose(model.proprio_std.numpy(), np.maximum(std, PROPRIO_STD_FLOOR), atol=1e-5)
    assert (std < PROPRIO_STD_FLOOR).any()  # the box's height barely moves: floored, not blown up to unit scale
    nq = EpisodeStore.open(push_store).info["nq"]
    assert model.proprio_anchored.numpy().tolist() == [i < nq for i in range(len(mean))]  # the positions: qpos
    loaded, _, _ = load_model(out)
    for name in ("proprio_mean", "proprio_std", "proprio_anchored"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    assert loaded.cfg.heads == "standard"
    assert ckpt["train_config"]["objective"]["head_weight"] == make_config("tiny").objective.head_weight


def tiny_model(**overrides) -> WorldModel:
    torch.manual_seed(0)
    cfg = WorldModelConfig(image_size=64, action_dim=2, proprio_dim=3, contact_dim=2, depth=4, deter=16, groups=4,
                           classes=4, hidden=16, **overrides)
    return WorldModel(cfg).eval()  # eval: the latent's expected value, so two losses of one batch are comparable


def loss(model: WorldModel, b: dict, **objective) -> tuple[torch.Tensor, dict]:
    """The training loss without the open-loop term, with the objective settings given."""
    return Objective(model, ObjectiveConfig(**{"openloop_steps": 0, **objective}))(b)


def batch(steps: int = 6, scale: float = 1.0, span: int | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {"image": torch.rand(2, steps, 3, 64, 64, generator=g),
           "action": torch.rand(2, span or steps, 2, generator=g),
           "proprio": scale * torch.randn(2, steps, 3, generator=g),
           "contact": (torch.rand(2, steps, 2, generator=g) > 0.5).float()}
    if span:
        out["span_proprio"] = scale * torch.randn(2, span, 3, generator=g)
        out["span_contact"] = (torch.rand(2, span, 2, generator=g) > 0.5).float()
    return out


def test_proprio_error_is_taken_in_standard_units_and_weighted_next_to_the_image():
    model = tiny_model()
    with torch.no_grad():
        _, metres = loss(model, batch())
        model.set_proprio_stats(torch.zeros(3), torch.full((3,), 1e-3))  # the same motion, now in millimetres
        _, millimetres = loss(model, batch(scale=1e-3))
    assert millimetres["proprio"] == pytest.approx(metres["proprio"].item(), rel=1e-4)  # its own scale, any units
    still = batch(scale=1e-3)
    still["proprio"].zero_()  # nothing moves
    legacy = tiny_model(heads="legacy")
    with torch.no_grad():  # how much the motion itself changes each loss: the legacy (symlog) one barely notices
        seen_by_legacy = loss(legacy, batch(scale=1e-3))[1]["proprio"] - loss(legacy, still)[1]["proprio"]
        seen_by_standard = loss(model, batch(scale=1e-3))[1]["proprio"] - loss(model, still)[1]["proprio"]
    assert abs(seen_by_legacy) < 1e-2 and abs(seen_by_standard) > 1.0
    with torch.no_grad():
        total_10, terms = loss(model, batch(scale=1e-3), head_weight=10.0)
        total_30, _ = loss(model, batch(scale=1e-3), head_weight=30.0)  # the same model, only the head weight differs
    heads = terms["proprio"] + terms["contact"]
    assert total_30 - total_10 == pytest.approx(20.0 * heads.item(), rel=1e-4)
    assert 10.0 * heads > 0.01 * terms["image"]  # the heads are not a rounding error of the summed image error


def test_heads_read_their_inputs_from_the_features_and_undo_the_standardisation():
    model = tiny_model()
    model.set_proprio_stats(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.1, 1e-6]))
    assert model.proprio_std[2] == PROPRIO_STD_FLOOR
    feat = torch.randn(5, model.cfg.feat)
    out = model.heads(feat)
    raw = model.proprio_head(feat)
    assert torch.allclose(out["proprio"], raw * model.proprio_std + model.proprio_mean)
    assert torch.allclose(model.proprio_units(out["proprio"]), raw, atol=1e-3)
    assert out["contact_logits"].shape == (5, 2)
    with pytest.raises(ValueError, match="heads must be one of"):
        tiny_model(heads="other")


def test_positions_are_anchored_on_the_observed_step_and_velocities_are_not():
    model = tiny_model()
    model.set_proprio_stats(torch.zeros(3), torch.ones(3), anchored=torch.tensor([True, True, False]))
    pred = torch.tensor([[[1.0, 2.0, 3.0], [1.5, 2.0, 4.0]]])  # (B=1, T=2, P=3) head outputs
    ref_pred, ref_truth = torch.tensor([[1.0, 1.0, 9.0]]), torch.tensor([[10.0, 20.0, 30.0]])
    anchored = model.anchor_proprio(pred, ref_pred, ref_truth)
    assert anchored.tolist() == [[[10.0, 21.0, 3.0], [10.5, 21.0, 4.0]]]  # observed + predicted change | as is
    legacy = tiny_model(heads="legacy")
    assert torch.equal(legacy.anchor_proprio(pred, ref_pred, ref_truth), pred)


def test_heads_are_trained_on_the_imagined_rollout_and_teach_the_dynamics():
    model = tiny_model()
    rollout = {"rollout_steps": 4, "rollout_frames": 2, "rollout_context": 2}
    b = batch(steps=4, span=6)
    b["rollout_image"], b["rollout_step"] = torch.rand(2, 2, 3, 64, 64), torch.tensor([[2, 4], [3, 5]])
    total, terms = loss(model, b, **rollout)
    assert {"rollout_proprio", "rollout_contact"} <= set(terms)
    # the imagined steps' targets are the span's steps rollout_context .. rollout_context + rollout_steps - 1
    changed = {k: v.clone() for k, v in b.items()}
    changed["span_proprio"][:, :2] += 100.0  # the observed frames before the rollout: not its targets
    rollout_proprio = terms["rollout_proprio"].item()
    assert loss(model, changed, **rollout)[1]["rollout_proprio"].item() == pytest.approx(rollout_proprio, rel=1e-3)
    changed["span_proprio"][:, 5] += 1.0
    assert loss(model, changed, **rollout)[1]["rollout_proprio"].item() != pytest.approx(rollout_proprio, rel=1e-3)
    model.zero_grad()
    terms["rollout_proprio"].backward()
    gru = model.rssm.gru.weight_hh.grad
    assert gru is not None and gru.abs().sum() > 0  # the imagined heads' error reaches the recurrent dynamics
    assert model.decoder.fc.weight.grad is None or model.decoder.fc.weight.grad.abs().sum() == 0
    # anchored entries are scored as changes since the rollout's reference step (window step rollout_context - 1)
    model.set_proprio_stats(torch.zeros(3), torch.ones(3), anchored=torch.tensor([True, False, False]))
    _, anchored = loss(model, b, **rollout)
    moved = {k: v.clone() for k, v in b.items()}
    moved["span_proprio"][:, 1:, 0] += 5.0  # the reference and every target shift alike: the same changes
    moved_proprio = loss(model, moved, **rollout)[1]["rollout_proprio"]
    assert moved_proprio.item() == pytest.approx(anchored["rollout_proprio"].item(), rel=1e-4)
    moved["span_proprio"][:, 1:, 1] += 5.0  # an entry scored as it is: the shift is an error
    assert loss(model, moved, **rollout)[1]["rollout_proprio"] > anchored["rollout_proprio"] + 10
    legacy = tiny_model(heads="legacy")
    assert "rollout_proprio" not in loss(legacy, b, **rollout)[1]  # older runs resume with the loss they had


def test_the_loader_brings_proprio_and_contacts_of_the_whole_rollout(data):
    starts = np.array([0, 31])
    raw = data.gather(starts, 4, action_length=9)
    assert raw["span_proprio"].shape == (2, 9, data.proprio.shape[1]) and raw["span_contact"].shape == (2, 9, 2)
    assert np.array_equal(raw["span_proprio"][1].numpy(), data.proprio[31:40])
    assert np.array_equal(raw["span_contact"][0].numpy(), data.contact[0:9])
    assert "span_proprio" not in data.gather(starts, 4)


def test_older_checkpoints_without_statistics_load_with_their_symlog_heads(run, tmp_path):
    _, out = run
    ckpt = read_checkpoint(out)
    old = dict(ckpt)
    old["config"] = {k: v for k, v in ckpt["config"].items() if k != "heads"}
    stats = ("proprio_mean", "proprio_std", "proprio_anchored")
    old["model"] = {k: v for k, v in ckpt["model"].items() if k not in stats}
    torch.save(old, tmp_path / "old.pt")
    model, _, _ = load_model(tmp_path / "old.pt")
    assert model.cfg.heads == "legacy" and not hasattr(model, "proprio_mean")
    feat = torch.randn(3, model.cfg.feat)
    assert torch.allclose(model.heads(feat)["proprio"], symexp(model.proprio_head(feat)))
    broken = dict(old, config=ckpt["config"])  # says standard heads but carries no statistics: refused, one line
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(TeleworldError, match="checkpoint weights do not fit its own config: .*proprio_mean"):
        load_model(tmp_path / "broken.pt")


def test_proprio_reconstruction_improves_with_training(data, tmp_path):
    result = train(data, make_config("tiny", steps=60, lr=2e-3), tmp_path, show_progress=False)
    model = result["model"]
    starts = data.windows(8)[::4]
    b = data.batch(starts, 8)
    fresh = WorldModel(model.cfg).eval()
    fresh.set_proprio_stats(model.proprio_mean, model.proprio_std)

    def recon_rmse(m: WorldModel) -> float:
        with torch.no_grad():
            posts, _ = m.observe(b["image"], b["action"])
            pred = m.decode(m.rssm.feat(posts), b["image"][:, 0])["proprio"]
        return (pred - b["proprio"]).pow(2).mean(-1).sqrt().mean().item()

    assert recon_rmse(model) < 0.8 * recon_rmse(fresh), (recon_rmse(model), recon_rmse(fresh))


def test_replay_anchors_the_models_positions_on_the_last_context_step(data, run):
    from replay.rollout import predict

    _, out = run
    model, _, _ = load_model(out)
    context, horizon, nq = 3, 5, data.position_dims
    b = data.batch(np.array([0, 31]), context + horizon)
    with torch.no_grad():
        _, preds, _ = predict(model, b, b["action"], context)
        posts, _ = model.observe(b["image"], b["action"])
        last = {k: v[:, context - 1] for k, v in posts.items()}
        at_last = model.heads(model.rssm.feat(last))["proprio"]
        imagined = model.heads(model.rssm.feat(model.imagine(last, b["action"][:, context - 1 : -1])))["proprio"]
    positions = b["proprio"][:, context - 1, None, :nq] + imagined[..., :nq] - at_last[:, None, :nq]
    assert np.allclose(preds["model"]["proprio"][..., :nq], positions.numpy(), atol=1e-5)
    assert np.allclose(preds["model"]["proprio"][..., nq:], imagined[..., nq:].numpy(), atol=1e-5)
    assert not np.allclose(preds["model"]["proprio"][..., :nq], imagined[..., :nq].numpy(), atol=1e-3)
