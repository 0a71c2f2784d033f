"""An action-conditioned latent world model: conv encoder -> RSSM (GRU + categorical latent) -> decoders.

Verbs (DreamerV3's vocabulary): ``initial(batch)``, ``observe(embeds, actions)``, ``imagine(state, actions)``,
``decode(feat, reference)``, ``open_loop(images, actions, context)``; the losses are train/objectives.py's.
Time convention (docs/schema.md): frame t is observed, then action t is
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
    """Sizes and parts of the model. ``action_dim``/``proprio_dim``/``contact_dim``/``image_size`` come from the data;
    the loss and its weights are train/objectives.py's."""

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
    composite: bool = False  # paint over the last observed frame (False: draw every pixel from the latent)
    transport: bool = False  # a composite decoder first moves the reference's pixels by a predicted flow
    blend: bool = False  # learn how much of the last observed frame to keep in each imagined one
    blend_kernel: int = 3  # receptive field of that per-pixel blend
    blend_horizon: int = 0  # steps ahead the blend tells apart (the training rollout's length)
    heads: str = "standard"  # proprio/contact heads: "standard" (below) or "legacy" (symlog proprio, posteriors only)
    reward: bool = False  # a reward head (what the planner sums)
    goal_dim: int = 0  # the reward head also sees the episode's task goal (train/goals.py), this long
    proprio_input: bool = False  # the posterior also observes concat(qpos, qvel), standardised (a state observation)

    @property
    def stoch(self) -> int:
        return self.groups * self.classes

    @property
    def feat(self) -> int:
        return self.deter + self.stoch

    @classmethod
    def from_dict(cls, d: dict) -> "WorldModelConfig":
        """A saved config; one saved before a key existed gets what it meant then (LEGACY), not today's default.
        A config saved with the loss settings in it (before train/objectives.py) names the blend's horizon
        ``rollout_steps`` and has a reward head where ``reward_weight > 0``."""
        names = {f.name for f in fields(cls)}
        d = dict(d)
        if "blend_horizon" not in d and d.get("blend"):
            d["blend_horizon"] = d.get("rollout_steps", 0)
        if "reward" not in d:
            d["reward"] = d.get("reward_weight", 0) > 0
        return cls(**{**LEGACY, **{k: v for k, v in d.items() if k in names}})

    def to_dict(self) -> dict:
        return asdict(self)


# What a config saved without these keys (before issue 27) trained: kept so older checkpoints load as they were.
LEGACY = {"heads": "legacy"}
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

    With ``transport`` the reference is first warped by a flow field (pixels, predicted at S/4 from the latent's
    features next to a small encoding of the reference, then upsampled) and painted over: what moved can be carried
    along sharp instead of redrawn (Finn et al.'s transport, SV2P). The flow starts at zero, so the decoder starts as
    the plain composite one.
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
        if cfg.transport and not cfg.composite:
            raise ValueError("transport moves the reference a composite decoder paints over: set composite = true")
        self.transport = Transport(d) if cfg.transport else None
        split = 6 if self.transport else 0  # the layers up to S/4, whose features the flow reads
        self.coarse, self.net = nn.Sequential(*layers[:split]), nn.Sequential(*layers[split:])

    def _coarse(self, feat: torch.Tensor) -> torch.Tensor:
        """(N, feat) -> the features of the layers before ``net`` (at S/4 for a transport decoder, else S/16)."""
        x = self.fc(feat).view(-1, self.ch, self.side, self.side).contiguous(memory_format=torch.channels_last)
        return self.coarse(x)

    def flow(self, feat: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(N, feat), reference (N, 3, S, S) -> the transport's flow (N, 2, S, S) in pixels (a transport decoder)."""
        x = self._coarse(feat)
        return self.transport.flows(x, reference.to(x.dtype))

    def forward(self, feat: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``reference`` (N, 3, S, S) in [0, 1]: required by a composite decoder, ignored otherwise."""
        x = self._coarse(feat)
        if self.paint is not None and reference is None:
            raise ValueError("a composite decoder needs the reference frame it paints over")
        if self.transport is not None:
            reference = self.transport(x, reference.to(x.dtype))
        x = self.net(x)
        if self.paint is None:
            return x.contiguous() + 0.5
        reference = reference.to(x.dtype)
        out = self.paint(torch.cat([x.contiguous(), reference - 0.5], 1))
        alpha = torch.sigmoid(out[:, 3:])
        return reference + alpha * (out[:, :3] + 0.5 - reference)


class Transport(nn.Module):
    """Warps a reference frame by a flow predicted from decoder features at S/4 and the reference's own encoding.

    flow (N, 2, S/4, S/4) in pixels = convs(concat(features, encode(reference))), upsampled bilinearly; each output
    pixel samples the reference at its position plus the flow (backward warping, borders repeated). The last conv
    starts at zero: no motion until the data asks for it."""

    def __init__(self, depth: int, scale: float = 4.0):
        super().__init__()
        self.scale = scale  # pixels per unit of the last conv's output: large moves need no large weights
        self.encode = nn.Sequential(nn.Conv2d(3, depth // 2, 4, 2, 1), nn.SiLU(), nn.Conv2d(depth // 2, depth, 4, 2, 1),
                                    nn.SiLU())
        self.flow = nn.Sequential(nn.Conv2d(3 * depth, 2 * depth, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(2 * depth, 2 * depth, 3, padding=2, dilation=2), nn.SiLU(),
                                  nn.Conv2d(2 * depth, 2, 3, padding=1))
        nn.init.zeros_(self.flow[-1].weight)
        nn.init.zeros_(self.flow[-1].bias)

    def forward(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """features (N, 2 * depth, S/4, S/4), reference (N, 3, S, S) in [0, 1] -> the reference warped."""
        return warp(reference, self.flows(features, reference))

    def flows(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The flow (N, 2, S, S) in pixels (x, y) that ``forward`` samples the reference with."""
        coarse = self.flow(torch.cat([features, self.encode(reference - 0.5)], 1)) * self.scale
        return F.interpolate(coarse.float(), size=reference.shape[-2:], mode="bilinear", align_corners=False)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """image (N, C, H, W) sampled at every pixel's position plus flow (N, 2, H, W) in pixels (x, y), bilinearly."""
    n, _, h, w = image.shape
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=image.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=image.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as grid_sample's (x, y)
    offset = flow.permute(0, 2, 3, 1) * torch.tensor([2 / w, 2 / h], device=image.device)
    grid = (base + offset).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
        # Gumbel-max draw of one class per group: no host sync, so a CUDA graph can capture it (multinomial and
        # one_hot check their inputs on the host)
        noise = torch.rand(probs.shape, device=probs.device, generator=generator).clamp_min(1e-20)
        index = (probs.log() - (-noise.log()).log()).argmax(-1, keepdim=True)
        sample = torch.zeros_like(probs).scatter_(-1, index, 1.0) + probs - probs.detach()  # straight-through
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


def _stack(states: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in states], 1) for k in states[0]}


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
    rollout, so on what replay scores, the anchored entries as changes since the rollout's first step
    (train/objectives.py). ``"legacy"``: the heads of checkpoints saved before (symlog proprio, posteriors only,
    no anchoring).

    With ``reward`` a reward head (MLP on concat(feat, goal)) predicts the recorded reward of the state,
    standardised by the training episodes' reward mean and std (``set_reward_stats``), trained on posteriors and on
    every imagined step of the long rollout; the planner (replay/planning.py) sums it over imagined futures."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.heads not in HEADS:
            raise ValueError(f"heads must be one of {', '.join(HEADS)}, not {cfg.heads!r}")
        # channels_last convolutions are about 25 % faster on CPU and what cuDNN prefers
        self.encoder = Encoder(cfg).to(memory_format=torch.channels_last)
        if cfg.proprio_input and not (cfg.proprio_dim and cfg.heads == "standard"):
            raise ValueError("proprio_input needs proprio in the data and standard heads (their proprio statistics)")
        self.proprio_encoder = _mlp(cfg.proprio_dim, cfg.hidden, cfg.hidden) if cfg.proprio_input else None
        self.rssm = RSSM(cfg, self.encoder.out_dim + (cfg.hidden if cfg.proprio_input else 0))
        self.decoder = Decoder(cfg).to(memory_format=torch.channels_last)
        self.proprio_head = _mlp(cfg.feat, cfg.hidden, cfg.proprio_dim) if cfg.proprio_dim else None
        self.contact_head = _mlp(cfg.feat, cfg.hidden, cfg.contact_dim) if cfg.contact_dim else None
        self.standard_heads = cfg.heads == "standard"
        if self.proprio_head is not None and self.standard_heads:  # identity until set_proprio_stats
            self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
            self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
            self.register_buffer("proprio_anchored", torch.zeros(cfg.proprio_dim, dtype=torch.bool))
        if cfg.blend and cfg.blend_horizon < 1:
            raise ValueError("blend is learned on the long rollout: it needs rollout_steps >= 1 (its blend_horizon)")
        self.blend = Blend(cfg.blend_horizon, cfg.blend_kernel) if cfg.blend else None
        self.reward_head = _mlp(cfg.feat + cfg.goal_dim, cfg.hidden, 1) if cfg.reward else None
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

    def heads(self, feat: torch.Tensor, names: tuple[str, ...] = ("proprio", "contact_logits")
              ) -> dict[str, torch.Tensor]:
        """feat (..., F) -> proprio (..., P) in native units and contact logits (..., G), for the heads present and
        asked for in ``names`` (a planner scoring positions skips the contact head)."""
        out = {}
        if self.proprio_head is not None and "proprio" in names:
            raw = self.proprio_head(feat)
            out["proprio"] = raw.float() * self.proprio_std + self.proprio_mean if self.standard_heads else symexp(raw)
        if self.contact_head is not None and "contact_logits" in names:
            out["contact_logits"] = self.contact_head(feat)
        return out

    def encode(self, images: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, T, 3, S, S) in [0, 1] -> embeds (B, T, E); a model with ``proprio_input`` also embeds the
        observed proprio (B, T, P), native units, next to them."""
        B, T = images.shape[:2]
        embed = self.encoder(images.flatten(0, 1)).view(B, T, -1)
        if self.proprio_encoder is None:
            return embed
        if proprio is None:
            raise ValueError("this model observes proprio (proprio_input): pass the observed concat(qpos, qvel)")
        state = self.proprio_encoder(self.proprio_units(proprio[:, :T].to(embed.device)).to(embed.dtype))
        return torch.cat([embed, state], -1)

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

    def observe(self, images: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None = None
                ) -> tuple[dict, dict]:
        """Posteriors and priors for a sequence of frames (and their proprio, for a model that observes it) and the
        actions applied after each."""
        return self.rssm.observe(self.encode(images, proprio), actions)

    def imagine(self, state: dict, actions: torch.Tensor) -> dict:
        """Open-loop states after applying ``actions`` (B, H, A) from ``state``."""
        return self.rssm.imagine(state, actions)

    @torch.no_grad()
    def open_loop(self, images: torch.Tensor, actions: torch.Tensor, context: int, horizon: int | None = None,
                  decode: bool = True, start: dict | None = None, ahead_from: int = 0,
                  proprio: torch.Tensor | None = None) -> dict:
        """Observe ``context`` frames, then imagine ``horizon`` steps with the given actions: replay's protocol.

        images (B, >= K, 3, S, S); actions (B, >= K-1+H, A), action t applied after frame t, so the imagined steps
        take actions K-1 .. K+H-2; ``horizon`` defaults to the frames past the context. ``start``: the posterior
        of frame K-1 when already observed (then the context is not observed again). Returns "start" (that
        posterior), "priors" (the imagined states, (B, H, ...)) and "feat" (their features, (B, H, F)); with
        ``decode`` also the imagined steps decoded (image painted over and blended toward frame K-1, proprio,
        contact logits) and, unless given ``start``, "recon": the context frames' reconstructions (B, K, 3, S, S).
        ``ahead_from``: steps ``start`` already lies past frame K-1 (dream imagines one step per call).
        ``proprio`` (B, >= K, P): the observed proprio, for a model with ``proprio_input``."""
        horizon = images.shape[1] - context if horizon is None else horizon
        posts = None
        if start is None:
            posts, _ = self.observe(images[:, :context], actions[:, :context], proprio)
            start = {k: v[:, -1] for k, v in posts.items()}
        priors = self.imagine(start, actions[:, context - 1 : context - 1 + horizon])
        out = {"start": start, "priors": priors, "feat": self.rssm.feat(priors)}
        if decode:
            out.update(self.decode(out["feat"], images[:, context - 1], torch.arange(1, horizon + 1) + ahead_from))
            if posts is not None:
                out["recon"] = self.decode(self.rssm.feat(posts), images[:, 0])["image"]
        return out
