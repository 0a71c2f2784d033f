"""The training loss, one term at a time (in the manner of DreamerV3's loss scales).

Each term is a class with one weight (a key of ObjectiveConfig) and the batch keys it reads (``needs``); the loader
(train/loop.py's Prefetcher) brings exactly the keys of the active terms. ``Objective(model, cfg)(batch)`` returns
the total, sum of weight x term in the order of TERMS, and every named value (a term may name several, e.g. the
heads' proprio and contact). The terms share one ``Pass`` over the batch: the posteriors, their decoding and the
long rollout are computed once, whichever terms read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from train.model import WorldModel, warp


@dataclass
class ObjectiveConfig:
    """The loss terms' weights and settings."""

    image_weight: float = 1.0  # the posteriors' image error, summed over pixels
    kl_dyn: float = 1.0  # prior toward the (stop-gradient) posterior
    kl_rep: float = 0.1  # posterior toward the (stop-gradient) prior
    free_nats: float = 1.0  # KL below this many nats is not penalised
    foreground_weight: float = 1.0  # loss weight of pixels that move within a training window (1: plain MSE)
    head_weight: float = 10.0  # weight of the proprio (standardised) and contact heads' terms next to the image error
    reward_weight: float = 10.0  # weight of the reward head's terms (standardised reward; 0: no reward head)
    openloop_steps: int = 3  # imagination steps trained against the truth (0: off)
    openloop_weight: float = 0.5  # weight of that open-loop image term
    openloop_stride: int = 4  # imagine from every n-th posterior of a window
    rollout_steps: int = 0  # long open-loop term: steps imagined after rollout_context frames, as replay does (0: off)
    rollout_frames: int = 4  # imagined frames decoded and scored per window (random steps of the rollout)
    rollout_weight: float = 1.0  # weight of that term
    rollout_context: int = 5  # frames observed before the long rollout (replay's K)
    blend_weight: float = 1.0  # weight of the blend's error (it reaches only the blend's own weights)
    transport_weight: float = 1.0  # weight of the transport's own error (a transport decoder's flow; 0: off)

    def to_dict(self) -> dict:
        return asdict(self)


# What a run saved before issue 27 (a model config without "heads") trained its heads with.
LEGACY = {"head_weight": 1.0}


class Pass:
    """One forward pass over a batch, computed lazily and shared by the terms."""

    def __init__(self, model: WorldModel, batch: dict[str, torch.Tensor], cfg: ObjectiveConfig):
        self.model, self.batch, self.cfg = model, batch, cfg
        self.images = batch["image"]

    @cached_property
    def observed(self) -> tuple[dict, dict]:
        return self.model.observe(self.images, self.batch["action"], self.batch.get("proprio"))

    @property
    def posts(self) -> dict:
        return self.observed[0]

    @cached_property
    def feat(self) -> torch.Tensor:
        return self.model.rssm.feat(self.posts)

    @cached_property
    def reference(self) -> torch.Tensor:
        """What a composite decoder paints over. At replay that is the last context frame, up to 50 steps before the
        prediction; a window is shorter, so training paints over a random frame of the same episode
        (batch["reference"]): only what is truly static may be copied, moved things must be drawn."""
        return self.batch.get("reference", self.images[:, 0])

    @cached_property
    def decoded(self) -> dict[str, torch.Tensor]:
        return self.model.decode(self.feat, self.reference)

    @cached_property
    def median(self) -> torch.Tensor | None:
        """The window's temporal median frame, when moving pixels weigh more."""
        return self.images.median(1, keepdim=True).values if self.cfg.foreground_weight != 1.0 else None

    def pixel_weight(self, images: torch.Tensor) -> torch.Tensor | float:
        """sqrt of the per-pixel loss weight (B, T, 1, S, S): ``foreground_weight`` where a frame differs from the
        window's median (so what moves in it), 1 elsewhere."""
        if self.median is None:
            return 1.0
        moving = (images - self.median).abs().amax(2, keepdim=True) > 0.1
        return torch.where(moving, self.cfg.foreground_weight**0.5, 1.0)

    @cached_property
    def rollout(self) -> torch.Tensor:
        """The long rollout as replay runs it: from the posterior of frame ``rollout_context - 1``, imagine
        ``rollout_steps`` steps with the real actions and the latent's expected value. The features of every
        imagined step (B, R, F); step j predicts window frame rollout_context + j."""
        cfg = self.cfg
        start = cfg.rollout_context - 1
        state = {k: v[:, start] for k, v in self.posts.items()}
        priors = self.model.rssm.imagine(state, self.batch["action"][:, start : start + cfg.rollout_steps],
                                         sample=False)
        return self.model.rssm.feat(priors)

    @cached_property
    def scored(self) -> torch.Tensor:
        """The rollout's features at the steps whose frames the loader brought along (batch["rollout_step"])."""
        steps = self.batch["rollout_step"] - self.cfg.rollout_context
        return torch.gather(self.rollout, 1, steps[..., None].expand(-1, -1, self.rollout.shape[-1]))


class Term:
    """One part of the loss: ``weight_key`` names its weight in ObjectiveConfig, ``needs`` the batch keys it reads."""

    weight_key: str = ""

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        self.model, self.cfg = model, cfg
        self.needs: tuple[str, ...] = ()

    @property
    def weight(self) -> float:
        return getattr(self.cfg, self.weight_key)

    def active(self) -> bool:
        """Whether this model and config train with the term at all."""
        return True

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        """The term's named values (none when the batch lacks what it needs); the term is their sum."""
        raise NotImplementedError

    def _observed(self) -> tuple[str, ...]:
        """What filtering a window into posteriors reads: its frames and actions (and proprio, when observed)."""
        return ("image", "action", *(("proprio",) if self.model.cfg.proprio_input else ()))

    def _composite(self) -> tuple[str, ...]:
        return ("reference",) if self.model.cfg.composite else ()


class Image(Term):
    """Squared error of the posteriors' decoded frames, summed over pixels, moving pixels weighted."""

    weight_key = "image_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = (*self._observed(), *self._composite())

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        weight = p.pixel_weight(p.images)
        return {"image": sum_sq(p.decoded["image"] * weight, p.images * weight, 3)}


class Carry(Term):
    """A transport decoder's own error: the reference warped by the posteriors' flow against their frames, moving
    pixels weighted, at full, half and quarter resolution (each scale's sum times its pixels' area). Without it the
    flow learns nothing where the composite draws instead of copying, which is where things moved; the coarse
    scales see a box that moved several pixels, where the full-resolution image has no gradient."""

    weight_key = "transport_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = (*self._observed(), "reference")

    def active(self) -> bool:
        return self.model.decoder.transport is not None and self.cfg.transport_weight > 0

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        B, T = p.images.shape[:2]
        reference = p.reference[:, None].expand(B, T, *p.images.shape[2:]).flatten(0, 1)
        flow = self.model.decoder.flow(p.feat.flatten(0, 1), reference)
        truth = p.images.flatten(0, 1)
        weight = p.pixel_weight(p.images)
        weight = weight.flatten(0, 1) if torch.is_tensor(weight) else torch.ones_like(truth[:, :1])
        total = torch.zeros((), device=truth.device)
        for scale in (1, 2, 4):  # a pool of 1 is the frame itself
            moved = warp(F.avg_pool2d(reference, scale), F.avg_pool2d(flow, scale) / scale)
            w = F.avg_pool2d(weight, scale)
            total = total + scale**2 * sum_sq(moved * w, F.avg_pool2d(truth, scale) * w, 3)
        return {"transport": total}


class Heads(Term):
    """The proprio and contact heads on the posteriors (head_terms)."""

    weight_key = "head_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = _head_keys(model, "proprio", "contact")

    def active(self) -> bool:
        return bool(self.needs)

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        return head_terms(self.model, p.decoded, p.batch.get("proprio"), p.batch.get("contact"))


class KLDyn(Term):
    """KL(sg(posterior) || prior) per step, clipped below at free nats: trains the dynamics."""

    weight_key = "kl_dyn"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = self._observed()

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        post, prior = p.observed
        return {"kl_dyn": kl(post["logits"].detach(), prior["logits"]).clamp(min=self.cfg.free_nats).mean()}


class KLRep(KLDyn):
    """KL(posterior || sg(prior)) per step, clipped below at free nats: keeps the representation predictable."""

    weight_key = "kl_rep"

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        post, prior = p.observed
        return {"kl_rep": kl(post["logits"], prior["logits"].detach()).clamp(min=self.cfg.free_nats).mean()}


class Reward(Term):
    """The reward head on the posteriors, in standardised units (reward_term)."""

    weight_key = "reward_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = ("reward", *(("goal",) if model.cfg.goal_dim else ()))

    def active(self) -> bool:
        return self.model.reward_head is not None

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        return {"reward": reward_term(self.model, p.feat, p.batch.get("goal"), p.batch["reward"])}


class OpenLoop(Term):
    """Image error after imagining ``openloop_steps`` steps from every ``openloop_stride``-th posterior; a composite
    decoder paints over the batch's reference, else over the last frame observed before imagining."""

    weight_key = "openloop_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = (*self._observed(), *self._composite())

    def active(self) -> bool:
        return self.cfg.openloop_steps > 0

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        n, stride, model = self.cfg.openloop_steps, self.cfg.openloop_stride, self.model
        images, actions = p.images, p.batch["action"]
        B, T = images.shape[:2]
        if T <= n:
            return {}
        t0 = torch.arange(0, T - n, stride, device=images.device)  # start steps, every `stride`-th
        state = {k: v[:, t0].flatten(0, 1) for k, v in p.posts.items()}  # (B * S, ...)
        for j in range(n):
            state = model.rssm.img_step(state, actions[:, t0 + j].flatten(0, 1))
        reference = p.batch.get("reference")
        if not model.cfg.composite:
            reference = None
        elif reference is None:
            reference = images[:, t0].flatten(0, 1)
        else:
            reference = reference[:, None].expand(B, len(t0), *images.shape[2:]).flatten(0, 1)
        pred = model.decoder(model.rssm.feat(state), reference).view(B, len(t0), *images.shape[2:])
        weight = p.pixel_weight(images)
        if torch.is_tensor(weight):
            weight = weight[:, t0 + n]
        return {"openloop": sum_sq(pred * weight, images[:, t0 + n] * weight, 3)}


class Rollout(Term):
    """Image error of the long rollout (Pass.rollout) on the few imagined frames the loader brought along
    (batch["rollout_image"], (B, F, 3, S, S), at window steps batch["rollout_step"]): decoding only those keeps
    the cost of 50 steps small. A composite decoder paints over the same reference as the other terms (painting
    over frame ``rollout_context - 1``, as replay does, measured 0.2 dB worse)."""

    weight_key = "rollout_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = ("action", "rollout_image", "rollout_step", *self._composite())

    def active(self) -> bool:
        return self.cfg.rollout_steps > 0

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        if "rollout_image" not in p.batch:
            return {}
        truth = p.batch["rollout_image"]
        pred = self.model.decode(p.scored, p.reference)["image"]
        weight = p.pixel_weight(truth)
        return {"rollout": sum_sq(pred * weight, truth * weight, 3)}


class BlendError(Rollout):
    """The blend's error on the rollout's scored frames decoded over frame ``rollout_context - 1``, as replay shows
    them; it reaches only the blend's weights (a mean, so it barely moves the clipped gradient norm)."""

    weight_key = "blend_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = (*self._observed(), "rollout_image", "rollout_step")

    def active(self) -> bool:
        return self.cfg.rollout_steps > 0 and self.model.blend is not None

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        if "rollout_image" not in p.batch:
            return {}
        start, truth = self.cfg.rollout_context - 1, p.batch["rollout_image"]
        with torch.no_grad():  # the frames replay shows: painted over the last context frame
            last = p.images[:, start]
            shown = self.model.decode(p.scored.detach(), last)["image"]
        ahead = (p.batch["rollout_step"] - start).flatten()
        blended = self.model.blend(shown.flatten(0, 1), last[:, None].expand_as(shown).flatten(0, 1), ahead)
        return {"blend": F.mse_loss(blended.float(), truth.flatten(0, 1).float())}


class RolloutHeads(Term):
    """The proprio and contact heads on every imagined step of the long rollout, as replay reads them: anchored
    entries scored as changes since the rollout's reference step (window step ``rollout_context - 1``)."""

    weight_key = "head_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = _head_keys(model, "span_proprio", "span_contact")

    def active(self) -> bool:
        return self.cfg.rollout_steps > 0 and self.model.standard_heads and bool(self.needs)

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        if "rollout_image" not in p.batch or not all(key in p.batch for key in self.needs):
            return {}
        start = self.cfg.rollout_context - 1  # the reference step: the posterior the rollout starts from
        seen = slice(start + 1, start + 1 + self.cfg.rollout_steps)
        span_proprio, span_contact = p.batch.get("span_proprio"), p.batch.get("span_contact")
        anchor = (p.decoded["proprio"][:, start], span_proprio[:, start]) if "proprio" in p.decoded else None
        ahead = head_terms(self.model, self.model.heads(p.rollout),
                           None if span_proprio is None else span_proprio[:, seen],
                           None if span_contact is None else span_contact[:, seen], anchor)
        return {f"rollout_{k}": v for k, v in ahead.items()}


class RolloutReward(Term):
    """The reward head on every imagined step of the long rollout: the reward the planner sums."""

    weight_key = "reward_weight"

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__(model, cfg)
        self.needs = ("span_reward", *(("goal",) if model.cfg.goal_dim else ()))

    def active(self) -> bool:
        return self.cfg.rollout_steps > 0 and self.model.reward_head is not None

    def __call__(self, p: Pass) -> dict[str, torch.Tensor]:
        if "rollout_image" not in p.batch or "span_reward" not in p.batch:
            return {}
        start = self.cfg.rollout_context
        reward = p.batch["span_reward"][:, start : start + self.cfg.rollout_steps]
        return {"rollout_reward": reward_term(self.model, p.rollout, p.batch.get("goal"), reward)}


TERMS: tuple[type[Term], ...] = (Image, Carry, Heads, KLDyn, KLRep, Reward, OpenLoop, Rollout, BlendError, RolloutHeads,
                                 RolloutReward)


class Objective(nn.Module):
    """The model's training loss: its forward (what DistributedDataParallel wraps) returns (total, named terms)."""

    def __init__(self, model: WorldModel, cfg: ObjectiveConfig):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.terms = [term for term in (kind(model, cfg) for kind in TERMS) if term.active()]

    @property
    def needs(self) -> set[str]:
        """The batch keys the active terms read: what the loader must bring."""
        return {key for term in self.terms for key in term.needs}

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = Pass(self.model, batch, self.cfg)
        total = torch.zeros((), device=batch["image"].device)
        named: dict[str, torch.Tensor] = {}
        for term in self.terms:
            values = term(p)
            if values:
                named.update(values)
                total = total + term.weight * sum(values.values(), torch.zeros((), device=total.device))
        named["total"] = total
        return total, named


def _head_keys(model: WorldModel, proprio: str, contact: str) -> tuple[str, ...]:
    """The keys of the heads' targets, for the heads the model has."""
    heads = ((proprio, model.proprio_head), (contact, model.contact_head))
    return tuple(key for key, head in heads if head is not None)


def head_terms(model: WorldModel, out: dict[str, torch.Tensor], proprio: torch.Tensor | None,
               contact: torch.Tensor | None, anchor: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:
    """Squared error of the proprio head in its units, summed over dimensions, and the contact head's binary
    cross-entropy summed over groups; each averaged over the other dims. ``anchor`` (the head's proprio and the
    true one at a reference step, each (B, P)): the anchored entries are scored as changes since that step."""
    terms = {}
    if "proprio" in out:
        pred, target = model.proprio_units(out["proprio"]), model.proprio_units(proprio)
        if anchor is not None:
            ref_pred, ref_truth = (model.proprio_units(a)[:, None] for a in anchor)
            pred = torch.where(model.proprio_anchored, pred - ref_pred, pred)
            target = torch.where(model.proprio_anchored, target - ref_truth, target)
        terms["proprio"] = sum_sq(pred, target, 1)
    if "contact_logits" in out:
        terms["contact"] = F.binary_cross_entropy_with_logits(
            out["contact_logits"].float(), contact.float(), reduction="none").sum(-1).mean()
    return terms


def reward_term(model: WorldModel, feat: torch.Tensor, goal: torch.Tensor | None, reward: torch.Tensor
                ) -> torch.Tensor:
    """Squared error of the reward head in standardised units; feat (B, T, F), goal (B, D), reward (B, T)."""
    goal = goal[:, None] if goal is not None and model.cfg.goal_dim else None
    target = (reward.float() - model.reward_mean) / model.reward_std
    return (model.reward(feat, goal, standardised=True) - target).pow(2).mean()


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of categorical latents (..., G, C), summed over groups and classes; fp32."""
    p = p_logits.float().softmax(-1)
    return (p * (p_logits.float().log_softmax(-1) - q_logits.float().log_softmax(-1))).sum((-1, -2))


def sum_sq(pred: torch.Tensor, target: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Squared error summed over the last ``event_dims`` dims, averaged over the rest."""
    return (pred.float() - target.float()).pow(2).flatten(-event_dims).sum(-1).mean()
