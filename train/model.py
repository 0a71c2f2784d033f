"""An action-conditioned latent world model: conv encoder -> RSSM (GRU + categorical latent) -> decoders.

Verbs (DreamerV3's vocabulary): ``initial(batch)``, ``observe(embeds, actions)``, ``imagine(state, actions)``,
``decode(feat, reference)``, ``loss(batch)``. Time convention (docs/schema.md): frame t is observed, then action t is
applied; so the latent at t+1 is ``img_step(latent_t, action_t)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class WorldModelConfig:
    """Sizes of the model. ``action_dim``/``proprio_dim``/``contact_dim``/``image_size`` come from the data."""

    image_size: int = 64
    action_dim: int = 2
    proprio_dim: int = 0
    contact_dim: int = 0
    depth: int = 16  # channels of the first conv layer; doubles per layer
    deter: int = 256  # GRU state size
    groups: int = 16  # categorical latent: groups x classes
    classes: int = 16
    hidden: int = 256
    unimix: float = 0.01
    free_nats: float = 1.0
    kl_dyn: float = 1.0
    kl_rep: float = 0.1
    openloop_steps: int = 3  # extra imagination steps trained against the truth
    openloop_weight: float = 0.5
    openloop_stride: int = 4  # imagine from every 4th posterior only: a quarter of the decoder cost
    foreground_weight: float = 1.0  # weight of pixels that differ from their window's temporal median
    composite: bool = False  # paint over the last observed frame (False: draw every pixel from the latent)
    rollout_steps: int = 0  # long open-loop term: imagine this many steps after `rollout_context` frames (0: off)
    rollout_frames: int = 4  # of those imagined steps, this many random ones are decoded and scored per window
    rollout_weight: float = 1.0
    rollout_context: int = 5  # frames observed before the long rollout starts (replay's K)
    blend: bool = False  # learn how much of the last observed frame to keep in each imagined one (needs rollout_steps)
    blend_kernel: int = 3  # receptive field of that per-pixel blend
    heads: str = "standard"  # proprio/contact heads: "standard" (below) or "legacy" (symlog proprio, posteriors only)
    head_weight: float = 10.0  # weight of the proprio and contact terms next to the image error summed over pixels
    reward_weight: float = 0.0  # weight of the reward head's term (0: the model has no reward head)
    goal_dim: int = 0  # the reward head also sees the episode's task goal (train/goals.py), this long

    @property
    def stoch(self) -> int:
        return self.groups * self.classes

    @property
    def feat(self) -> int:
        return self.deter + self.stoch

    @classmethod
    def from_dict(cls, d: dict) -> "WorldModelConfig":
        """A saved config; one saved before a key existed gets what it meant then (LEGACY), not today's default."""
        names = {f.name for f in fields(cls)}
        return cls(**{**LEGACY, **{k: v for k, v in d.items() if k in names}})

    def to_dict(self) -> dict:
        return asdict(self)


# What a config saved without these keys (before issue 27) trained: kept so older checkpoints load as they were.
LEGACY = {"heads": "legacy", "head_weight": 1.0}
HEADS = ("standard", "legacy")
PROPRIO_STD_FLOOR = 1e-3  # native units (m, rad, m/s, ...): a dimension that barely moves is not blown up to unit scale


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, out))


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class Encoder(nn.Module):
    """(N, 3, S, S) in [0, 1] -> (N, embed). Four stride-2 convs down to S/16."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        d, layers, ch = cfg.depth, [], 3
        for i in range(4):
            layers += [nn.Conv2d(ch, d * 2**i, 4, 2, 1), nn.GroupNorm(1, d * 2**i), nn.SiLU()]
            ch = d * 2**i
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = ch * (cfg.image_size // 16) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5).contiguous(memory_format=torch.channels_last))


class Decoder(nn.Module):
    """(N, feat) -> (N, 3, S, S) image in [0, 1] (unbounded; MSE target).

    With ``composite`` the decoder also sees a reference frame (at replay the last one observed) and paints over
    it: image = alpha * drawn + (1 - alpha) * reference, alpha per pixel from the latent's features next to the
    reference's pixel. What did not move is copied exactly; the latent only has to draw what changed (in the
    manner of Finn et al. 2016's compositing video predictors).
    """

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        d, self.side = cfg.depth, cfg.image_size // 16
        self.ch = d * 8
        self.fc = nn.Linear(cfg.feat, self.ch * self.side**2)
        layers, ch = [], self.ch
        for i in reversed(range(3)):
            layers += [nn.ConvTranspose2d(ch, d * 2**i, 4, 2, 1), nn.GroupNorm(1, d * 2**i), nn.SiLU()]
            ch = d * 2**i
        if cfg.composite:  # per-pixel 1x1 convs decide drawn vs reference: cheap at full resolution
            layers += [nn.ConvTranspose2d(ch, d // 4, 4, 2, 1), nn.SiLU()]
            self.paint = nn.Sequential(nn.Conv2d(d // 4 + 3, d // 2, 1), nn.SiLU(), nn.Conv2d(d // 2, 4, 1))
        else:
            layers.append(nn.ConvTranspose2d(ch, 3, 4, 2, 1))
            self.paint = None
        self.net = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``reference`` (N, 3, S, S) in [0, 1]: required by a composite decoder, ignored otherwise."""
        x = self.fc(feat).view(-1, self.ch, self.side, self.side).contiguous(memory_format=torch.channels_last)
        x = self.net(x)
        if self.paint is None:
            return x.contiguous() + 0.5
        if reference is None:
            raise ValueError("a composite decoder needs the reference frame it paints over")
        reference = reference.to(x.dtype)
        out = self.paint(torch.cat([x.contiguous(), reference - 0.5], 1))
        alpha = torch.sigmoid(out[:, 3:])
        return reference + alpha * (out[:, :3] + 0.5 - reference)


class Blend(nn.Module):
    """Pulls an imagined frame toward the last observed one, per pixel and by how many steps ahead it is.

    image + g * (last - image), g = sigmoid(conv([image, last, |image - last|, embedding(steps ahead)])). A few steps
    ahead little has moved and the last frame is the better guess where the model blurs; far ahead the model is.
    Trained on detached decoder outputs, so it leaves the training of the world model itself alone."""

    def __init__(self, horizon: int, kernel: int = 3, width: int = 16, embed: int = 8):
        super().__init__()
        self.horizon = horizon
        self.ahead = nn.Embedding(horizon, embed)
        self.net = nn.Sequential(nn.Conv2d(7 + embed, width, kernel, padding=kernel // 2), nn.SiLU(),
                                 nn.Conv2d(width, 1, 1))

    def forward(self, image: torch.Tensor, last: torch.Tensor, ahead: torch.Tensor) -> torch.Tensor:
        """image, last (N, 3, S, S); ahead (N,) steps ahead of ``last``, 1-based (beyond the horizon: its last)."""
        last = last.to(image.dtype)
        emb = self.ahead((ahead.long() - 1).clamp(0, self.horizon - 1)).to(image.dtype)
        size = image.shape[-1]
        x = torch.cat([image - 0.5, last - 0.5, (image - last).abs().amax(1, keepdim=True),
                       emb[:, :, None, None].expand(-1, -1, size, size)], 1)
        gate = torch.sigmoid(self.net(x) - 2.0)  # starts near 0.12: mostly the model's own frame
        return image + gate * (last - image)


class RSSM(nn.Module):
    """Recurrent state-space model. A state is a dict: deter (N, D), stoch (N, G*C), logits (N, G, C)."""

    def __init__(self, cfg: WorldModelConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Sequential(nn.Linear(cfg.stoch + cfg.action_dim, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.SiLU())
        self.gru = nn.GRUCell(cfg.hidden, cfg.deter)
        self.prior_net = _mlp(cfg.deter, cfg.hidden, cfg.stoch)
        self.post_net = _mlp(cfg.deter + embed_dim, cfg.hidden, cfg.stoch)

    def initial(self, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The zero state every sequence starts from."""
        cfg = self.cfg
        return {
            "deter": torch.zeros(batch, cfg.deter, device=device),
            "stoch": torch.zeros(batch, cfg.stoch, device=device),
            "logits": torch.zeros(batch, cfg.groups, cfg.classes, device=device),
        }

    def _latent(self, logits: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unimix logits and the latent, flattened: a straight-through one-hot sample in training; at evaluation
        (or with ``sample=False``) its expected value (the class probabilities), deterministic and the better
        guess under squared error. A ``generator`` draws a one-hot sample in any mode (a planner's sampled
        future, reproducible from the generator's seed)."""
        cfg = self.cfg
        probs = F.softmax(logits.float().view(-1, cfg.groups, cfg.classes), -1)
        probs = (1 - cfg.unimix) * probs + cfg.unimix / cfg.classes
        if generator is None and not (self.training and sample):
            return probs.log(), probs.flatten(1)
        index = torch.multinomial(probs.view(-1, cfg.classes), 1, generator=generator).view(-1, cfg.groups)
        sample = F.one_hot(index, cfg.classes).float() + probs - probs.detach()  # straight-through
        return probs.log(), sample.flatten(1)

    def img_step(self, state: dict, action: torch.Tensor, sample: bool = True,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Prior of the next state from the current state and the action applied in it (``generator``: see
        _latent)."""
        x = self.inp(torch.cat([state["stoch"], action], -1))
        with torch.autocast(x.device.type, enabled=False):  # the recurrent state stays fp32 under bf16
            deter = self.gru(x.float(), state["deter"].float())
        logits, stoch = self._latent(self.prior_net(deter), sample, generator)
        return {"deter": deter, "stoch": stoch, "logits": logits}

    def obs_step(self, state: dict, action: torch.Tensor, embed: torch.Tensor) -> tuple[dict, dict]:
        """(posterior, prior) of the next state given its observation embedding."""
        prior = self.img_step(state, action)
        logits, stoch = self._latent(self.post_net(torch.cat([prior["deter"], embed], -1)))
        return {"deter": prior["deter"], "stoch": stoch, "logits": logits}, prior

    def observe(self, embeds: torch.Tensor, actions: torch.Tensor, state: dict | None = None) -> tuple[dict, dict]:
        """Filter a sequence. embeds (B, T, E); actions (B, T, A) with action t applied after frame t.

        Returns posteriors and priors stacked over time, each value (B, T, ...).
        """
        B, T = embeds.shape[:2]
        state = state or self.initial(B, embeds.device)
        prev_action = torch.zeros_like(actions[:, 0])  # no action precedes the first frame
        posts, priors = [], []
        for t in range(T):
            post, prior = self.obs_step(state, prev_action, embeds[:, t])
            posts.append(post)
            priors.append(prior)
            state, prev_action = post, actions[:, t]
        return _stack(posts), _stack(priors)

    def imagine(self, state: dict, actions: torch.Tensor, sample: bool = True) -> dict:
        """Roll the prior forward open loop. state: one (B, ...) state; actions (B, H, A). Returns (B, H, ...).
        ``sample=False`` feeds the latent's expected value in training too, as replay does."""
        priors = []
        for h in range(actions.shape[1]):
            state = self.img_step(state, actions[:, h], sample)
            priors.append(state)
        return _stack(priors)

    @staticmethod
    def feat(state: dict) -> torch.Tensor:
        return torch.cat([state["deter"], state["stoch"]], -1)

    def kl(self, post: dict, prior: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(dynamics, representation) KL terms per step, each clipped below at free nats; fp32."""
        def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
            p = p_logits.float().softmax(-1)
            return (p * (p_logits.float().log_softmax(-1) - q_logits.float().log_softmax(-1))).sum((-1, -2))

        dyn = kl(post["logits"].detach(), prior["logits"])
        rep = kl(post["logits"], prior["logits"].detach())
        free = self.cfg.free_nats
        return dyn.clamp(min=free), rep.clamp(min=free)


def _stack(states: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in states], 1) for k in states[0]}


def _flat(state: dict) -> dict:
    return {k: v.flatten(0, 1) for k, v in state.items()}


class WorldModel(nn.Module):
    """Encoder + RSSM + heads for image, proprio and contacts (Bernoulli).

    The proprio and contact heads are MLPs on the features of one step, concat(deter, stoch), the decoder's input
    too: posteriors in training, imagined priors at replay. With ``heads = "standard"`` the proprio head predicts
    concat(qpos, qvel) standardised per dimension by the training episodes' mean and std (buffers
    ``proprio_mean``/``proprio_std``, saved and restored with the weights; ``set_proprio_stats``). Velocities are
    predicted directly; positions (qpos, marked by the buffer ``proprio_anchored``) as their change since a
    reference step whose proprio was observed (``anchor_proprio``: at replay the last context step), which keeps
    what the latent reads poorly (the box's yaw) as exact as copy-last and adds the motion it predicts
    (docs/training.md has the check that chose this). Both heads are also trained on every imagined step of the long
    rollout, so on what replay scores, the anchored entries as changes since the rollout's first step; their terms
    weigh ``head_weight``. ``"legacy"``: the heads of checkpoints saved before (symlog proprio, posteriors only,
    no anchoring).

    With ``reward_weight > 0`` a reward head (MLP on concat(feat, goal)) predicts the recorded reward of the state,
    standardised by the training episodes' reward mean and std (``set_reward_stats``), trained on posteriors and on
    every imagined step of the long rollout; the planner (replay/planning.py) sums it over imagined futures."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.heads not in HEADS:
            raise ValueError(f"heads must be one of {', '.join(HEADS)}, not {cfg.heads!r}")
        # channels_last convolutions are about 25 % faster on CPU and what cuDNN prefers
        self.encoder = Encoder(cfg).to(memory_format=torch.channels_last)
        self.rssm = RSSM(cfg, self.encoder.out_dim)
        self.decoder = Decoder(cfg).to(memory_format=torch.channels_last)
        self.proprio_head = _mlp(cfg.feat, cfg.hidden, cfg.proprio_dim) if cfg.proprio_dim else None
        self.contact_head = _mlp(cfg.feat, cfg.hidden, cfg.contact_dim) if cfg.contact_dim else None
        self.standard_heads = cfg.heads == "standard"
        if self.proprio_head is not None and self.standard_heads:  # identity until set_proprio_stats
            self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
            self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
            self.register_buffer("proprio_anchored", torch.zeros(cfg.proprio_dim, dtype=torch.bool))
        if cfg.blend and cfg.rollout_steps < 1:
            raise ValueError("blend is learned on the long rollout: it needs rollout_steps >= 1")
        self.blend = Blend(cfg.rollout_steps, cfg.blend_kernel) if cfg.blend else None
        self.reward_head = _mlp(cfg.feat + cfg.goal_dim, cfg.hidden, 1) if cfg.reward_weight > 0 else None
        if self.reward_head is not None:  # identity until set_reward_stats
            self.register_buffer("reward_mean", torch.zeros(()))
            self.register_buffer("reward_std", torch.ones(()))
            self.register_buffer("goal_mean", torch.zeros(cfg.goal_dim))
            self.register_buffer("goal_std", torch.ones(cfg.goal_dim))

    @torch.no_grad()
    def set_reward_stats(self, mean: float, std: float, goal_mean: np.ndarray | torch.Tensor,
                         goal_std: np.ndarray | torch.Tensor) -> None:
        """Standardise the reward head's target and its goal input by the training episodes' statistics."""
        if self.reward_head is None:
            raise ValueError("only a model with a reward head takes reward statistics")
        self.reward_mean.fill_(float(mean))
        self.reward_std.fill_(max(float(std), 1e-6))
        self.goal_mean.copy_(torch.as_tensor(goal_mean, dtype=torch.float32))
        self.goal_std.copy_(torch.as_tensor(goal_std, dtype=torch.float32).clamp_min(1e-6))

    def reward(self, feat: torch.Tensor, goal: torch.Tensor | None = None, standardised: bool = False) -> torch.Tensor:
        """feat (..., F), goal (..., D) or broadcastable (None when goal_dim = 0) -> predicted reward (...), in
        the recorded units (or standardised ones)."""
        if self.reward_head is None:
            raise ValueError("this model has no reward head")
        if self.cfg.goal_dim:
            if goal is None:
                raise ValueError(f"this reward head needs the task goal ({self.cfg.goal_dim} values)")
            goal = ((goal.float() - self.goal_mean) / self.goal_std).to(feat.dtype)
            feat = torch.cat([feat, goal.expand(*feat.shape[:-1], -1)], -1)
        raw = self.reward_head(feat)[..., 0].float()
        return raw if standardised else raw * self.reward_std + self.reward_mean

    def _reward_term(self, feat: torch.Tensor, goal: torch.Tensor | None, reward: torch.Tensor) -> torch.Tensor:
        """Squared error of the reward head in standardised units; feat (B, T, F), goal (B, D), reward (B, T)."""
        goal = goal[:, None] if goal is not None and self.cfg.goal_dim else None
        target = (reward.float() - self.reward_mean) / self.reward_std
        return (self.reward(feat, goal, standardised=True) - target).pow(2).mean()

    @torch.no_grad()
    def set_proprio_stats(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor,
                          anchored: np.ndarray | torch.Tensor | None = None) -> None:
        """Standardise the proprio head with per-dimension ``mean`` and ``std`` (P,), those of the training episodes
        (a std below PROPRIO_STD_FLOOR is raised to it); ``anchored`` (P,) bool: the entries predicted as changes
        since an observed reference step (the positions), none when not given."""
        if self.proprio_head is None or not self.standard_heads:
            raise ValueError("only a model with a proprio head and standard heads takes proprio statistics")
        self.proprio_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.proprio_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(PROPRIO_STD_FLOOR))
        self.proprio_anchored.copy_(torch.as_tensor(False if anchored is None else anchored, dtype=torch.bool))

    def anchor_proprio(self, proprio: torch.Tensor, ref_pred: torch.Tensor, ref_truth: torch.Tensor) -> torch.Tensor:
        """Head predictions (B, T, P) -> the anchored entries as the observed ``ref_truth`` (B, P) plus the change the
        head predicts since the reference step, ``proprio - ref_pred`` (ref_pred: the head on that step's posterior);
        the others unchanged. Legacy heads anchor nothing."""
        if not self.standard_heads:
            return proprio
        moved = ref_truth[:, None].to(proprio.dtype) + proprio - ref_pred[:, None].to(proprio.dtype)
        return torch.where(self.proprio_anchored, moved, proprio)

    def proprio_units(self, proprio: torch.Tensor) -> torch.Tensor:
        """Proprio (..., P) in native units -> the proprio head's units (standardised, or symlog for legacy heads)."""
        if not self.standard_heads:
            return symlog(proprio)
        return (proprio.float() - self.proprio_mean) / self.proprio_std

    def heads(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """feat (..., F) -> proprio (..., P) in native units and contact logits (..., G), for the heads present."""
        out = {}
        if self.proprio_head is not None:
            raw = self.proprio_head(feat)
            out["proprio"] = raw.float() * self.proprio_std + self.proprio_mean if self.standard_heads else symexp(raw)
        if self.contact_head is not None:
            out["contact_logits"] = self.contact_head(feat)
        return out

    def _head_terms(self, out: dict[str, torch.Tensor], proprio: torch.Tensor | None, contact: torch.Tensor | None,
                    anchor: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Squared error of the proprio head in its units, summed over dimensions, and the contact head's binary
        cross-entropy summed over groups; each averaged over the other dims. ``anchor`` (the head's proprio and the
        true one at a reference step, each (B, P)): the anchored entries are scored as changes since that step."""
        terms = {}
        if "proprio" in out:
            pred, target = self.proprio_units(out["proprio"]), self.proprio_units(proprio)
            if anchor is not None:
                ref_pred, ref_truth = (self.proprio_units(a)[:, None] for a in anchor)
                pred = torch.where(self.proprio_anchored, pred - ref_pred, pred)
                target = torch.where(self.proprio_anchored, target - ref_truth, target)
            terms["proprio"] = _sum_sq(pred, target, 1)
        if "contact_logits" in out:
            terms["contact"] = F.binary_cross_entropy_with_logits(
                out["contact_logits"].float(), contact.float(), reduction="none").sum(-1).mean()
        return terms

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, T, 3, S, S) in [0, 1] -> embeds (B, T, E)."""
        B, T = images.shape[:2]
        return self.encoder(images.flatten(0, 1)).view(B, T, -1)

    def decode(self, feat: torch.Tensor, reference: torch.Tensor, ahead: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """feat (B, T, F) -> image (B, T, 3, S, S), proprio (B, T, P) in original units, contact logits.

        ``reference`` (B, 3, S, S): the last frame the model observed before these states (a composite decoder
        paints over it; the first frame of the window for posteriors). ``ahead`` (T,): for imagined states, how
        many steps after ``reference`` each one is; a model with ``blend`` then blends its frames toward it."""
        B, T = feat.shape[:2]
        flat = feat.flatten(0, 1)
        size = self.cfg.image_size
        ref = reference[:, None].expand(B, T, 3, size, size).flatten(0, 1)
        image = self.decoder(flat, ref if self.cfg.composite else None)
        if ahead is not None and self.blend is not None:
            image = self.blend(image, ref, ahead.to(image.device).repeat(B))
        out = {"image": image.view(B, T, 3, size, size)}
        out.update({k: v.view(B, T, -1) for k, v in self.heads(flat).items()})
        return out

    def observe(self, images: torch.Tensor, actions: torch.Tensor) -> tuple[dict, dict]:
        """Posteriors and priors for a sequence of frames and the actions applied after each."""
        return self.rssm.observe(self.encode(images), actions)

    def imagine(self, state: dict, actions: torch.Tensor) -> dict:
        """Open-loop states after applying ``actions`` (B, H, A) from ``state``."""
        return self.rssm.imagine(state, actions)

    @torch.no_grad()
    def open_loop(self, images: torch.Tensor, actions: torch.Tensor, context: int) -> dict[str, torch.Tensor]:
        """Observe ``context`` frames, then imagine the rest with the real actions.

        images (B, K+H, 3, S, S); actions (B, K+H, A). Returns decoded predictions for steps K..K+H-1
        and the reconstructions of the K context frames.
        """
        posts, _ = self.observe(images[:, :context], actions[:, :context])
        last = {k: v[:, -1] for k, v in posts.items()}
        horizon = images.shape[1] - context
        priors = self.imagine(last, actions[:, context - 1 : context - 1 + horizon])
        pred = self.decode(self.rssm.feat(priors), images[:, context - 1], torch.arange(1, horizon + 1))
        pred["recon"] = self.decode(self.rssm.feat(posts), images[:, 0])["image"]
        return pred

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (so DistributedDataParallel sees a forward call)."""
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its named terms. batch: image (B,T,3,S,S), action (B,T,A), proprio, contact."""
        cfg = self.cfg
        images, actions = batch["image"], batch["action"]
        posts, priors = self.observe(images, actions)
        feat = self.rssm.feat(posts)
        # A composite decoder paints over a reference frame. At replay that is the last context frame, up to 50
        # steps before the prediction; a window is shorter, so training paints over a random frame of the same
        # episode (batch["reference"]): only what is truly static may be copied, moved things must be drawn.
        reference = batch.get("reference", images[:, 0])
        out = self.decode(feat, reference)
        median = images.median(1, keepdim=True).values if cfg.foreground_weight != 1.0 else None
        weight = self._pixel_weight(images, median)
        terms = {"image": _sum_sq(out["image"] * weight, images * weight, 3)}
        heads = self._head_terms(out, batch.get("proprio"), batch.get("contact"))
        terms.update(heads)
        dyn, rep = self.rssm.kl(posts, priors)
        terms["kl_dyn"], terms["kl_rep"] = dyn.mean(), rep.mean()
        total = (terms["image"] + cfg.head_weight * sum(heads.values(), torch.zeros((), device=images.device))
                 + cfg.kl_dyn * terms["kl_dyn"] + cfg.kl_rep * terms["kl_rep"])
        if self.reward_head is not None:
            terms["reward"] = self._reward_term(feat, batch.get("goal"), batch["reward"])
            total = total + cfg.reward_weight * terms["reward"]
        if cfg.openloop_steps > 0 and images.shape[1] > cfg.openloop_steps:
            terms["openloop"] = self._openloop_loss(posts, batch, weight, batch.get("reference"))
            total = total + cfg.openloop_weight * terms["openloop"]
        if cfg.rollout_steps > 0 and "rollout_image" in batch:
            terms["rollout"], blend, imagined = self._rollout_loss(posts, batch, median, reference)
            total = total + cfg.rollout_weight * terms["rollout"]
            if blend is not None:  # reaches only the blend's weights (a mean, so it barely moves the clipped norm)
                terms["blend"] = blend
                total = total + blend
            if self.standard_heads and "span_proprio" in batch:  # the heads on each imagined step, as replay reads them
                start = cfg.rollout_context - 1  # the reference step: the posterior the rollout starts from
                seen = slice(start + 1, start + 1 + cfg.rollout_steps)
                anchor = (out["proprio"][:, start], batch["span_proprio"][:, start]) if "proprio" in out else None
                ahead = self._head_terms(self.heads(imagined), batch["span_proprio"][:, seen],
                                         batch["span_contact"][:, seen], anchor)
                terms.update({f"rollout_{k}": v for k, v in ahead.items()})
                total = total + cfg.head_weight * sum(ahead.values(), torch.zeros((), device=images.device))
            if self.reward_head is not None and "span_reward" in batch:  # the reward the planner sums
                start = cfg.rollout_context
                terms["rollout_reward"] = self._reward_term(
                    imagined, batch.get("goal"), batch["span_reward"][:, start : start + cfg.rollout_steps])
                total = total + cfg.reward_weight * terms["rollout_reward"]
        terms["total"] = total
        return total, terms

    def _pixel_weight(self, images: torch.Tensor, median: torch.Tensor | None) -> torch.Tensor | float:
        """sqrt of the per-pixel loss weight (B, T, 1, S, S): ``foreground_weight`` where a frame differs from
        ``median``, the temporal median of its window (so what moves in it), 1 elsewhere."""
        if median is None:
            return 1.0
        moving = (images - median).abs().amax(2, keepdim=True) > 0.1
        return torch.where(moving, self.cfg.foreground_weight**0.5, 1.0)

    def _rollout_loss(self, posts: dict, batch: dict, median: torch.Tensor | None,
                      reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Image error of a long open-loop rollout, as replay runs it: from the posterior of frame
        ``rollout_context - 1``, imagine ``rollout_steps`` steps with the real actions and the latent's expected
        value, and score the few imagined frames the loader brought along (batch["rollout_image"], (B, F, 3, S, S),
        at window steps batch["rollout_step"] (B, F)). Decoding only those keeps the cost of 50 steps small.
        A composite decoder paints over the same ``reference`` as the other terms (painting over frame
        ``rollout_context - 1``, as replay does, measured 0.2 dB worse). Returns that error and, for a model with
        ``blend``, the blend's error on the same frames painted over frame ``rollout_context - 1`` as replay shows
        them (else None), and the features of every imagined step (B, R, F)."""
        cfg = self.cfg
        start = cfg.rollout_context - 1
        state = {k: v[:, start] for k, v in posts.items()}
        priors = self.rssm.imagine(state, batch["action"][:, start : start + cfg.rollout_steps], sample=False)
        feat = self.rssm.feat(priors)  # (B, R, F): imagined step j predicts window frame rollout_context + j
        index = (batch["rollout_step"] - cfg.rollout_context)[..., None].expand(-1, -1, feat.shape[-1])
        truth = batch["rollout_image"]
        picked = torch.gather(feat, 1, index)
        pred = self.decode(picked, reference)["image"]
        weight = self._pixel_weight(truth, median)
        loss = _sum_sq(pred * weight, truth * weight, 3)
        if self.blend is None:
            return loss, None, feat
        with torch.no_grad():  # the frames replay shows: painted over the last context frame
            last = batch["image"][:, start]
            shown = self.decode(picked.detach(), last)["image"]
        ahead = (batch["rollout_step"] - start).flatten()
        blended = self.blend(shown.flatten(0, 1), last[:, None].expand_as(shown).flatten(0, 1), ahead)
        return loss, F.mse_loss(blended.float(), truth.flatten(0, 1).float()), feat

    def _openloop_loss(self, posts: dict, batch: dict, weight: torch.Tensor | float = 1.0,
                       reference: torch.Tensor | None = None) -> torch.Tensor:
        """Image error after imagining n steps from every posterior (the quantity replay measures); a composite
        decoder paints over ``reference`` (B, 3, S, S), else over the last frame observed before imagining."""
        n, stride = self.cfg.openloop_steps, self.cfg.openloop_stride
        images, actions = batch["image"], batch["action"]
        B, T = images.shape[:2]
        t0 = torch.arange(0, T - n, stride, device=images.device)  # start steps, every `stride`-th
        state = _flat({k: v[:, t0] for k, v in posts.items()})  # (B * S, ...)
        for j in range(n):
            state = self.rssm.img_step(state, actions[:, t0 + j].flatten(0, 1))
        if not self.cfg.composite:
            reference = None
        elif reference is None:
            reference = images[:, t0].flatten(0, 1)
        else:
            reference = reference[:, None].expand(B, len(t0), *images.shape[2:]).flatten(0, 1)
        pred = self.decoder(self.rssm.feat(state), reference).view(B, len(t0), *images.shape[2:])
        if torch.is_tensor(weight):
            weight = weight[:, t0 + n]
        return _sum_sq(pred * weight, images[:, t0 + n] * weight, 3)


def _sum_sq(pred: torch.Tensor, target: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Squared error summed over the last ``event_dims`` dims, averaged over the rest."""
    return (pred.float() - target.float()).pow(2).flatten(-event_dims).sum(-1).mean()
