"""Early exit: a token leaves the decoder after a chosen block when the model is already confident.

After each block in ``exit_layers`` the hidden state goes through the model's own final norm and LM
head; a token whose top-token probability exceeds ``threshold`` exits there. An exited token's hidden
state is copied unchanged through the later blocks (CALM, Schuster et al., 2022; LayerSkip, Elhoushi
et al., 2024), so

* the model's ordinary final norm + LM head give exactly the exit layer's logits, and
* later blocks still see the token in attention: their K/V for it are computed from the copied state.

With a KV cache (generation), a step in which every token has exited skips the later blocks and only
writes their K/V (``ModelAdapter.fill_kv_cache``), which is the same cache a full pass would leave.
Exit decisions are causal, so a parallel forward over a sequence (evaluation) gives the same
per-token exits and logits as decoding it token by token.

The saved checkpoint is the unchanged transformer (stock ``from_pretrained`` runs it at full depth);
``config.early_exit`` records the policy and :func:`attach_early_exit` turns it back on.
"""

from __future__ import annotations

import torch
from torch import nn

from autocompress.errors import ConfigError
from autocompress.models.adapter import ModelAdapter


class ExitPolicy:
    """Per-forward exit state shared by the blocks, and running exit-depth statistics."""

    def __init__(self, adapter: ModelAdapter, exit_layers: list[int], threshold: float):
        self.adapter = adapter
        self.exit_layers = frozenset(exit_layers)
        self.threshold = threshold
        self.num_layers = adapter.num_layers
        self.exited = self.depth = None
        # Measured on held-out text when the technique is applied; the hardware model charges these.
        self.expected_depth: float | None = None
        self.expected_head_reads: float = 0.0
        self.reset_stats()

    def reset_stats(self) -> None:
        self.depth_sum = self.head_reads = 0.0
        self.tokens = 0

    @property
    def avg_exit_layer(self) -> float | None:
        """Mean number of blocks a token ran through, over every forward since :meth:`reset_stats`."""
        return self.depth_sum / self.tokens if self.tokens else None

    def begin(self, hidden: torch.Tensor) -> None:
        self.exited = torch.zeros(hidden.shape[:-1], dtype=torch.bool, device=hidden.device)
        self.depth = torch.full(hidden.shape[:-1], self.num_layers, device=hidden.device)

    @torch.no_grad()
    def after_block(self, blocks_run: int, hidden: torch.Tensor) -> None:
        if blocks_run in self.exit_layers and blocks_run < self.num_layers and not self.exited.all():
            live = ~self.exited
            self.head_reads += float(live.sum())
            logits = self.adapter.lm_head(self.adapter.final_norm(hidden[live]))
            confident = torch.zeros_like(live)
            confident[live] = logits.float().softmax(-1).amax(-1) > self.threshold
            self.depth[confident] = blocks_run
            self.exited |= confident
        if blocks_run == self.num_layers:
            self.depth_sum += float(self.depth.sum())
            self.tokens += self.depth.numel()


class _ExitingBlock:
    """Mixed into a decoder block's class: freeze exited tokens, skip the block when all have exited."""

    _exit_policy: ExitPolicy
    _block_index: int

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        policy = self._exit_policy
        if self._block_index == 0:
            policy.begin(hidden_states)
        if policy.exited.all() and kwargs.get("cache") is not None:
            policy.adapter.fill_kv_cache(self, hidden_states, kwargs)
            out = hidden_states
        else:
            out = super().forward(hidden_states, *args, **kwargs)
            if isinstance(out, tuple):
                raise TypeError("early exit needs decoder blocks that return a tensor (transformers >= 5)")
            out = torch.where(policy.exited.unsqueeze(-1), hidden_states, out)  # exited tokens: copy the state
        policy.after_block(self._block_index + 1, out)
        return out


_EXITING_CLASSES: dict[type, type] = {}


def _exiting_class(cls: type) -> type:
    if cls not in _EXITING_CLASSES:
        _EXITING_CLASSES[cls] = type(f"Exiting{cls.__name__}", (_ExitingBlock, cls), {})
    return _EXITING_CLASSES[cls]


def check_exit_layers(exit_layers: list[int], n: int) -> None:
    bad = [i for i in exit_layers if not 1 <= i < n]
    if bad:
        raise ConfigError(
            "early_exit.exit_layers", f"{bad} out of range: an exit follows block 1 to {n - 1} of this {n}-block model"
        )


def attach_early_exit(
    model: nn.Module, exit_layers: list[int] | None = None, threshold: float | None = None
) -> ExitPolicy:
    """Turn early exit on (in place); without arguments, from the policy recorded in ``config.early_exit``."""
    recorded = getattr(model.config, "early_exit", None) or {}
    exit_layers = recorded.get("exit_layers") if exit_layers is None else exit_layers
    threshold = recorded.get("threshold") if threshold is None else threshold
    adapter = ModelAdapter(model)
    check_exit_layers(exit_layers, adapter.num_layers)
    policy = ExitPolicy(adapter, exit_layers, threshold)
    for i, block in enumerate(adapter.layers):
        base = type(block) if not isinstance(block, _ExitingBlock) else type(block).__mro__[2]
        block.__class__ = _exiting_class(base)
        block._exit_policy, block._block_index = policy, i
    model.config.early_exit = {"exit_layers": sorted(policy.exit_layers), "threshold": threshold}
    return policy


def exit_policy(model: nn.Module) -> ExitPolicy | None:
    """The early-exit policy attached to ``model``, if any."""
    first = ModelAdapter(model).layers[0]
    return getattr(first, "_exit_policy", None) if isinstance(first, _ExitingBlock) else None


@torch.no_grad()
def measure_exit_depth(model: nn.Module, batches: list[torch.Tensor]) -> tuple[float, float]:
    """Per token over ``batches`` (exits active): blocks run, and exit-head (norm + LM head) evaluations."""
    policy = exit_policy(model)
    policy.reset_stats()
    for ids in batches:
        model(input_ids=ids)
    measured = policy.avg_exit_layer, policy.head_reads / policy.tokens
    policy.reset_stats()
    return measured
