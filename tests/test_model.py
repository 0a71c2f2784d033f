import pickle
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from recorder import EpisodeStore
from teleworld.errors import TeleworldError
from train.checkpoint import load_model, read_checkpoint, save_checkpoint
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train


@pytest.fixture(scope="module")
def data(push_store):
    store = EpisodeStore.open(push_store)
    return EpisodeArrays(store, DataSpec.from_store(store))


def test_tiny_model_loss_falls(data, tmp_path):
    cfg = make_config("tiny", steps=60, lr=2e-3)
    result = train(data, cfg, tmp_path, show_progress=False)
    totals = [row["total"] for row in result["history"]]
    assert np.mean(totals[-2:]) < 0.7 * totals[0]


def test_checkpoint_reloads_and_predicts_the_same(data, tmp_path):
    result = train(data, make_config("tiny", steps=3), tmp_path, show_progress=False)
    model = result["model"].eval()
    batch = data.batch(np.array([0, 30]), 12)
    before = model.open_loop(batch["image"], batch["action"], context=4)
    loaded, spec, ckpt = load_model(tmp_path)
    after = loaded.open_loop(batch["image"], batch["action"], context=4)
    assert ckpt["step"] == 3 and spec == data.spec
    for key in ("image", "proprio", "contact_logits", "recon", "feat"):
        assert torch.equal(before[key], after[key]), key


def test_actions_change_the_imagined_future(data, tmp_path):
    model = train(data, make_config("tiny", steps=2), tmp_path, show_progress=False)["model"].eval()
    batch = data.batch(np.array([0]), 12)
    real = model.open_loop(batch["image"], batch["action"], context=4)["image"]
    other = model.open_loop(batch["image"], -batch["action"], context=4)["image"]
    assert not torch.equal(real, other)


def test_checkpoints_of_other_formats_are_refused_without_executing(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(TeleworldError, match="not a loadable teleworld checkpoint"):
        read_checkpoint(evil)
    torch.save({"evil": Boom()}, tmp_path / "evil2.pt")
    with pytest.raises(TeleworldError, match="not a loadable teleworld checkpoint"):
        read_checkpoint(tmp_path / "evil2.pt")
    assert not (tmp_path / "pwned").exists()
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(TeleworldError, match="not a teleworld world-model checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TeleworldError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "absent.pt")


def test_random_bytes_are_refused_as_not_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    failures = set()
    for size in range(1000, 1040):  # torch's unpickler fails on these in several ways, IndexError among them
        path = tmp_path / f"random{size}.pt"
        path.write_bytes(rng.bytes(size))
        with pytest.raises(TeleworldError, match="is not a loadable teleworld checkpoint") as caught:
            read_checkpoint(path)
        failures.add(type(caught.value.__cause__).__name__)
    assert {"IndexError", "KeyError", "UnicodeDecodeError"} <= failures


def test_mismatched_data_is_refused(data):
    other = DataSpec(**{**vars(data.spec), "image_size": 96})
    with pytest.raises(TeleworldError, match="image_size=64 but the data has image_size=96"):
        data.spec.check_compatible(other)


SAVE_AGAIN = textwrap.dedent(
    """
    import resource, signal, sys
    from teleworld.errors import TeleworldError
    from train.checkpoint import load_model, save_checkpoint

    path, limit, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    model, spec, _ = load_model(path)
    if how == "die":  # the kernel kills the process mid-write (Python ignores SIGXFSZ: the write fails with EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # no file may grow past `limit` bytes
    try:
        save_checkpoint(path, model, spec, 8)
    except TeleworldError as exc:
        print(exc)
    """
)


def test_checkpoint_is_written_atomically(data, tmp_path):
    model = train(data, make_config("tiny", steps=1), tmp_path, show_progress=False)["model"]
    path = save_checkpoint(tmp_path / "c.pt", model, data.spec, 7)
    script = tmp_path / "save_again.py"
    script.write_text(SAVE_AGAIN)
    half = str(path.stat().st_size // 2)
    killed = subprocess.run([sys.executable, str(script), str(path), half, "die"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr  # killed halfway through writing step 8
    assert read_checkpoint(path)["step"] == 7 and load_model(path)[2]["step"] == 7
    failed = subprocess.run([sys.executable, str(script), str(path), half, "fail"], capture_output=True, text=True)
    assert failed.returncode == 0, failed.stderr
    assert f"could not write {path} (File too large); the previous checkpoint is kept" in failed.stdout
    assert load_model(path)[2]["step"] == 7 and sorted(p.name for p in tmp_path.glob("c.pt*")) == ["c.pt"]


def loss(model, batch: dict, **objective) -> tuple[torch.Tensor, dict]:
    """The training loss of ``model`` on ``batch`` with the objective settings given (defaults otherwise)."""
    from train.objectives import Objective, ObjectiveConfig

    return Objective(model, ObjectiveConfig(**objective))(batch)


def test_foreground_weight_scales_the_error_of_moving_pixels_only():
    from train.model import WorldModel, WorldModelConfig
    from train.objectives import ObjectiveConfig, Pass

    images = torch.full((1, 5, 3, 16, 16), 0.5)
    images[0, 2, :, 3, 4] = 1.0  # one pixel lights up in one frame: it differs from the window's median
    model = WorldModel(WorldModelConfig(image_size=16, depth=4, deter=8, hidden=8, groups=2, classes=2)).eval()
    batch = {"image": images, "action": torch.zeros(1, 5, 2)}
    assert Pass(model, batch, ObjectiveConfig()).pixel_weight(images) == 1.0
    w = Pass(model, batch, ObjectiveConfig(foreground_weight=9.0)).pixel_weight(images) ** 2
    assert w.shape == (1, 5, 1, 16, 16) and w[0, 2, 0, 3, 4] == 9.0
    assert w.sum() == 9.0 + (5 * 16 * 16 - 1)  # every other pixel keeps weight 1
    _, terms_plain = loss(model, batch)
    _, terms_weighted = loss(model, batch, foreground_weight=9.0)
    assert terms_weighted["image"] > terms_plain["image"]  # the lit pixel's error now counts 9 times


def test_latent_is_sampled_in_training_and_its_expected_value_at_evaluation():
    from train.model import RSSM, WorldModelConfig

    cfg = WorldModelConfig(groups=3, classes=4, deter=8, hidden=8)
    rssm = RSSM(cfg, embed_dim=5)
    logits = torch.randn(6, cfg.groups * cfg.classes)
    probs = (1 - cfg.unimix) * logits.view(6, 3, 4).softmax(-1) + cfg.unimix / cfg.classes
    _, sample = rssm.train()._latent(logits)
    assert torch.allclose(sample.detach().view(6, 3, 4).sum(-1), torch.ones(6, 3))  # one class per group
    assert torch.allclose(sample.detach().view(6, 3, 4).amax(-1), torch.ones(6, 3), atol=1e-6)  # one-hot
    _, expected = rssm.eval()._latent(logits)
    assert torch.allclose(expected.view(6, 3, 4), probs, atol=1e-6)  # the class probabilities, not a sample


def _composite_model(alpha_logit: float):
    """A small composite model whose alpha is pinned to sigmoid(alpha_logit) everywhere."""
    from train.model import WorldModel, WorldModelConfig

    model = WorldModel(WorldModelConfig(image_size=16, depth=4, deter=8, hidden=8, groups=2, classes=2,
                                        composite=True)).eval()
    last = model.decoder.paint[-1]
    with torch.no_grad():
        last.weight[3].zero_()
        last.bias[3] = alpha_logit
    return model


def test_composite_decoder_paints_over_the_last_observed_frame():
    images = torch.rand(2, 7, 3, 16, 16)
    actions = torch.randn(2, 7, 2)
    copying = _composite_model(-1e4).open_loop(images, actions, context=3)  # alpha = 0: copy the reference
    assert torch.equal(copying["image"], images[:, 2:3].expand(2, 4, 3, 16, 16))  # the last context frame
    assert torch.equal(copying["recon"], images[:, :1].expand(2, 3, 3, 16, 16))  # posteriors: the first frame
    drawing = _composite_model(1e4)  # alpha = 1: only what the latent draws
    drawn = drawing.open_loop(images, actions, context=3)["image"]
    assert not torch.allclose(drawn, images[:, 2:3].expand(2, 4, 3, 16, 16), atol=1e-2)
    with pytest.raises(ValueError, match="needs the reference frame"):
        drawing.decoder(torch.zeros(1, drawing.cfg.feat))


def test_warp_moves_pixels_by_the_flow():
    from train.model import warp

    image = torch.rand(2, 3, 8, 8)
    assert torch.allclose(warp(image, torch.zeros(2, 2, 8, 8)), image, atol=1e-6)
    flow = torch.zeros(2, 2, 8, 8)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # every pixel samples 2 to the right and 1 up
    moved = warp(image, flow)
    assert torch.allclose(moved[..., 1:, :6], image[..., :-1, 2:], atol=1e-6)


def test_transport_decoder_starts_as_the_composite_one_and_needs_it():
    from train.model import WorldModel, WorldModelConfig

    sizes = dict(image_size=16, depth=4, deter=8, hidden=8, groups=2, classes=2, composite=True)
    model = WorldModel(WorldModelConfig(**sizes, transport=True)).eval()
    with torch.no_grad():
        model.decoder.paint[-1].weight[3].zero_()
        model.decoder.paint[-1].bias[3] = -1e4  # alpha = 0: the (warped) reference itself
    images, actions = torch.rand(2, 6, 3, 16, 16), torch.randn(2, 6, 2)
    out = model.open_loop(images, actions, context=3)
    assert torch.allclose(out["image"], images[:, 2:3].expand(2, 3, 3, 16, 16), atol=1e-6)  # no flow yet
    with pytest.raises(ValueError, match="composite"):
        WorldModel(WorldModelConfig(**{**sizes, "composite": False}, transport=True))


def test_transport_term_scores_the_warped_reference_and_reaches_the_flow():
    from train.model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(image_size=16, depth=4, deter=8, hidden=8, groups=2, classes=2,
                                        composite=True, transport=True))
    images, reference = torch.rand(2, 5, 3, 16, 16), torch.rand(2, 3, 16, 16)
    batch = {"image": images, "action": torch.zeros(2, 5, 2), "reference": reference}
    _, terms = loss(model, batch, transport_weight=1.0)
    # no flow yet: at every scale the error of the reference itself, each scale's sum times its pixels' area
    pooled = [(lambda x, s=s: torch.nn.functional.avg_pool2d(x.flatten(0, 1), s)) for s in (1, 2, 4)]
    expected = sum(s**2 * (pool(reference[:, None].expand_as(images)) - pool(images)).pow(2).flatten(1).sum(-1).mean()
                   for s, pool in zip((1, 2, 4), pooled))
    assert torch.allclose(terms["transport"], expected, rtol=1e-4)
    terms["transport"].backward()
    assert model.decoder.transport.flow[-1].weight.grad.abs().sum() > 0
    _, off = loss(model, batch, transport_weight=0.0)
    assert "transport" not in off


def test_transport_learns_to_carry_a_square_sharp():
    """A square moves 3 pixels left or right, which the features say: the flow learns to carry it, and the
    warped reference matches the next frame far better than the reference does."""
    from train.model import Transport

    torch.manual_seed(0)
    transport = Transport(8)
    optimizer = torch.optim.Adam(transport.parameters(), 3e-3)

    def batch(n: int = 16, size: int = 24):
        reference, target = torch.full((n, 3, size, size), 0.8), torch.full((n, 3, size, size), 0.8)
        features = torch.zeros(n, 16, size // 4, size // 4)
        for i, (y, x) in enumerate(torch.randint(6, size - 11, (n, 2)).tolist()):
            shift = 3 if i % 2 else -3
            reference[i, :, y : y + 5, x : x + 5] = 0.1
            target[i, :, y : y + 5, x + shift : x + shift + 5] = 0.1
            features[i, 0] = shift / 3
        return features, reference, target

    for _ in range(150):
        features, reference, target = batch()
        loss = (transport(features, reference) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features, reference, target = batch()
    with torch.no_grad():
        carried = (transport(features, reference) - target).pow(2).mean()
    assert carried < 0.1 * (reference - target).pow(2).mean()


def test_composite_training_paints_over_the_batch_reference():
    images, reference = torch.rand(2, 6, 3, 16, 16), torch.rand(2, 3, 16, 16)
    batch = {"image": images, "action": torch.zeros(2, 6, 2), "reference": reference}
    _, terms = loss(_composite_model(-1e4), batch)  # alpha = 0: every decoded frame is the reference
    expected = (reference[:, None] - images).pow(2).flatten(2).sum(-1).mean()
    assert torch.allclose(terms["image"], expected)
    _, without = loss(_composite_model(-1e4), {k: v for k, v in batch.items() if k != "reference"})
    assert torch.allclose(without["image"], (images[:, :1] - images).pow(2).flatten(2).sum(-1).mean())


def test_long_rollout_term_scores_what_replay_measures():
    from train.model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    cfg = WorldModelConfig(image_size=16, depth=4, deter=8, hidden=8, groups=2, classes=2)
    model = WorldModel(cfg).eval()  # eval: deterministic posteriors, so the two paths must agree exactly
    images, actions = torch.rand(2, 12, 3, 16, 16), torch.randn(2, 12, 2)
    steps = torch.tensor([[3, 7], [5, 11]])  # window steps of the frames the loader brought along
    truth = images[torch.arange(2)[:, None], steps]
    batch = {"image": images[:, :6], "action": actions, "rollout_image": truth, "rollout_step": steps}
    _, terms = loss(model, batch, rollout_steps=9, rollout_context=3)
    replay = model.open_loop(images, actions, context=3)["image"]  # predicts frames 3..11 from frame 2's posterior
    pred = replay[torch.arange(2)[:, None], steps - 3]
    assert torch.allclose(terms["rollout"], (pred - truth).pow(2).flatten(2).sum(-1).mean(), rtol=1e-5)
    _, without = loss(model, {k: v for k, v in batch.items() if not k.startswith("rollout")}, rollout_steps=9,
                      rollout_context=3)
    assert "rollout" not in without


def test_long_rollout_paints_over_the_batch_reference():
    model = _composite_model(-1e4)  # alpha = 0: every decoded frame is the reference
    images, reference = torch.rand(2, 6, 3, 16, 16), torch.rand(2, 3, 16, 16)
    truth = torch.rand(2, 2, 3, 16, 16)
    batch = {"image": images, "action": torch.zeros(2, 11, 2), "reference": reference,
             "rollout_image": truth, "rollout_step": torch.tensor([[5, 6], [9, 10]])}
    _, terms = loss(model, batch, rollout_steps=6)
    assert torch.allclose(terms["rollout"], (reference[:, None] - truth).pow(2).flatten(2).sum(-1).mean())


def _blend_model():
    from train.model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    cfg = WorldModelConfig(image_size=16, depth=4, deter=8, hidden=8, groups=2, classes=2, composite=True,
                           blend=True, blend_horizon=6)
    return WorldModel(cfg)


def test_blend_learns_only_from_its_own_term_and_leaves_the_world_model_alone():
    model = _blend_model()
    images, truth = torch.rand(2, 6, 3, 16, 16), torch.rand(2, 2, 3, 16, 16)
    batch = {"image": images, "action": torch.randn(2, 8, 2), "reference": torch.rand(2, 3, 16, 16),
             "rollout_image": truth, "rollout_step": torch.tensor([[3, 5], [4, 8]])}
    _, terms = loss(model, batch, rollout_steps=6, rollout_context=3)
    terms["blend"].backward()
    blend_grads = [p.grad for p in model.blend.parameters()]
    assert all(g is not None for g in blend_grads) and any(g.abs().sum() > 0 for g in blend_grads)
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("blend."))
    with pytest.raises(ValueError, match="needs rollout_steps"):
        type(model)(type(model.cfg)(blend=True, blend_horizon=0))


def test_blend_keeps_more_of_the_last_frame_where_it_is_the_better_guess():
    from train.model import Blend

    torch.manual_seed(0)
    blend = Blend(horizon=10, kernel=1)
    optimizer = torch.optim.Adam(blend.parameters(), 1e-2)
    ahead = torch.tensor([1] * 8 + [10] * 8)
    for _ in range(150):  # one step ahead the truth is the last frame, ten steps ahead it is the model's frame
        image, last = torch.rand(16, 3, 8, 8), torch.rand(16, 3, 8, 8)
        truth = torch.where((ahead == 1)[:, None, None, None], last, image)
        loss = (blend(image, last, ahead) - truth).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    image, last = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    out = blend(image, last, torch.tensor([1, 25]))  # 25 is past the horizon: treated as its last step
    assert (out[0] - last[0]).abs().mean() < 0.25 * (image[0] - last[0]).abs().mean()
    assert (out[1] - image[1]).abs().mean() < 0.25 * (image[1] - last[1]).abs().mean()


def test_replay_blends_imagined_frames_but_not_reconstructions():
    model = _blend_model().eval()
    images, actions = torch.rand(2, 9, 3, 16, 16), torch.randn(2, 9, 2)
    with torch.no_grad():
        model.blend.net[-1].bias.fill_(1e4)  # gate = 1: every imagined frame is the last context frame
    out = model.open_loop(images, actions, context=3)
    assert torch.allclose(out["image"], images[:, 2:3].expand(2, 6, 3, 16, 16))
    assert not torch.allclose(out["recon"], images[:, :1].expand(2, 3, 3, 16, 16), atol=1e-3)


def test_a_model_config_saved_with_the_loss_settings_in_it_loads_with_its_parts():
    """Before train/objectives.py a checkpoint's model config held the loss settings: the blend's horizon was
    rollout_steps and the reward head existed where reward_weight > 0."""
    from train.model import WorldModelConfig

    old = {"image_size": 16, "depth": 4, "deter": 8, "hidden": 8, "groups": 2, "classes": 2, "heads": "standard",
           "blend": True, "rollout_steps": 7, "reward_weight": 10.0, "kl_dyn": 1.0, "head_weight": 10.0}
    cfg = WorldModelConfig.from_dict(old)
    assert (cfg.blend, cfg.blend_horizon, cfg.reward, cfg.heads) == (True, 7, True, "standard")
    assert not WorldModelConfig.from_dict({**old, "reward_weight": 0.0}).reward
    assert WorldModelConfig.from_dict({"image_size": 16}).heads == "legacy"  # before issue 27: legacy heads
