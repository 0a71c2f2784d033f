"""One optimiser step: forward under autocast, backward, gradient clip, AdamW; eager or replayed from a CUDA graph.

On a GPU the small models' step is launch-bound: the recurrent model runs its cell once per observed and imagined
step (about 80 a window with the presets' long rollout), each a handful of tiny kernels, forward and backward.
``GraphedStep`` captures the whole step (PyTorch's "whole network capture": forward, backward, clip and optimiser
update) once and replays it, so one launch replaces thousands. Both return the loss and its named terms; the
trainer checks the loss after the step (a non-finite loss stops the run before any checkpoint takes the weights).
"""

from __future__ import annotations

from typing import Callable

import torch

from teleworld.errors import TeleworldError

LossFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate in place (a captured optimiser reads it from a device tensor)."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class Step:
    """An eager training step of ``loss_fn`` (the Objective, or DDP around it)."""

    def __init__(self, loss_fn: LossFn, optimizer: torch.optim.Optimizer, grad_clip: float, bf16: bool,
                 device: torch.device):
        self.loss_fn, self.optimizer, self.grad_clip = loss_fn, optimizer, grad_clip
        self.bf16, self.device = bf16, device
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        for group in optimizer.param_groups:  # a run resumed from a captured one updates eagerly again
            group["capturable"], group["lr"] = False, float(group["lr"])

    def __call__(self, batch: dict[str, torch.Tensor], lr: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        set_lr(self.optimizer, lr)
        return self._run(batch)

    def _run(self, batch: dict[str, torch.Tensor], cache: bool = True) -> tuple[torch.Tensor, dict]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=cache):
            loss, terms = self.loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return loss.detach(), {k: v.detach() for k, v in terms.items()}


class GraphedStep(Step):
    """The same step captured in a CUDA graph at the first batch and replayed for every later one.

    Each call copies the batch into the graph's static inputs, writes the learning rate into the optimiser's
    device tensor and replays. Capturing runs three warm-up steps on that batch; the weights and optimiser state
    are put back afterwards, so the run trains exactly the steps it is asked for. Batches must keep the first one's
    keys, shapes and dtypes (the trainer's do: fixed batch size and window)."""

    WARMUP = 3

    def __init__(self, loss_fn: LossFn, optimizer: torch.optim.Optimizer, grad_clip: float, bf16: bool,
                 device: torch.device, batch: dict[str, torch.Tensor]):
        super().__init__(loss_fn, optimizer, grad_clip, bf16, device)
        if device.type != "cuda":
            raise TeleworldError(f"cuda_graph needs a CUDA device, not {device.type}; drop run.cuda_graph")
        for group in optimizer.param_groups:  # the captured update reads lr from memory and keeps step on the GPU
            group["capturable"] = True
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for state in optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device, torch.float32)
        self.inputs = {k: v.clone() for k, v in batch.items()}
        saved_params = [p.detach().clone() for p in self.params]
        saved_state = {p: {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
                       for p in self.params if p in optimizer.state}
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                self._run(self.inputs, cache=False)
        torch.cuda.current_stream(device).wait_stream(side)
        optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients it writes
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.terms = self._run(self.inputs, cache=False)
        with torch.no_grad():
            for p, saved in zip(self.params, saved_params):
                p.copy_(saved)
            for p in self.params:
                before = saved_state.get(p, {})
                for key, value in optimizer.state[p].items():
                    if torch.is_tensor(value):
                        value.copy_(before[key]) if key in before else value.zero_()

    def __call__(self, batch: dict[str, torch.Tensor], lr: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.keys() != self.inputs.keys() or any(v.shape != self.inputs[k].shape for k, v in batch.items()):
            raise TeleworldError("a captured training step needs batches shaped like its first one")
        for key, value in batch.items():
            self.inputs[key].copy_(value, non_blocking=True)
        set_lr(self.optimizer, lr)
        self.graph.replay()
        return self.loss, self.terms
