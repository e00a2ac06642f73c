"""The distillation loop: the base model teaches the compressed one on the calibration blocks.

Deterministic: the batch of step ``t`` is drawn from a generator seeded by (seed, t), the learning
rate is a function of ``t`` (linear warmup, cosine decay) and LoRA's initial ``A`` by the seed, so a
run resumed from a checkpoint at step ``t`` continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.techniques.distill.checkpoint import Checkpoint, TrainState
from autocompress.techniques.distill.loss import hidden_mse, kd_loss


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    lr: float
    batch_size: int
    seq_len: int
    temperature: float
    hidden_weight: float
    warmup_steps: int
    max_grad_norm: float
    checkpoint_every: int
    seed: int


class Interrupted(RuntimeError):
    """Training stopped at ``stop_at`` (tests and time limits); the checkpoint holds the state."""


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to 10% of ``lr`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / span)))


def batch(tokens: torch.Tensor, cfg: TrainConfig, step: int) -> torch.Tensor:
    """``batch_size`` random blocks (with repetition), each a random ``seq_len`` window; seeded by step."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    rows = torch.randint(tokens.shape[0], (cfg.batch_size,), generator=gen)
    start = int(torch.randint(tokens.shape[1] - cfg.seq_len + 1, (1,), generator=gen))
    return tokens[rows, start : start + cfg.seq_len]


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def distillation_loss(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    hidden = cfg.hidden_weight > 0
    with torch.no_grad():
        t_out = teacher(input_ids=ids, output_hidden_states=hidden)
    s_out = student(input_ids=ids, output_hidden_states=hidden)
    loss = kd_loss(s_out.logits, t_out.logits, cfg.temperature)
    if hidden:
        loss = loss + cfg.hidden_weight * hidden_mse(s_out.hidden_states, t_out.hidden_states)
    return loss


def train(
    student: nn.Module,
    teacher: nn.Module,
    tokens: torch.Tensor,
    trainable: dict[str, nn.Parameter],
    cfg: TrainConfig,
    checkpoint: Checkpoint | None = None,
    stop_at: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainState:
    """Run (or resume) ``cfg.steps`` AdamW steps on ``trainable``; returns the step count and losses."""
    params = list(trainable.values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    state = (checkpoint.load(trainable, optimizer) if checkpoint else None) or TrainState()
    if on_step is not None and state.step:
        on_step(state.step, state.losses[-1] if state.losses else float("nan"))
    while state.step < cfg.steps:
        if stop_at is not None and state.step >= stop_at:
            if checkpoint:
                checkpoint.save(state, trainable, optimizer)
            raise Interrupted(f"distillation stopped at step {state.step} of {cfg.steps}")
        ids = batch(tokens, cfg, state.step).to(device_of(student))
        loss = distillation_loss(student, teacher, ids, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, state.step)
        optimizer.step()
        state.step += 1
        state.losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(state.step, state.losses[-1])
        if checkpoint and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
            checkpoint.save(state, trainable, optimizer)
    if checkpoint:
        checkpoint.save(state, trainable, None)  # the finished run: reused as is, no optimizer state needed
    return state
