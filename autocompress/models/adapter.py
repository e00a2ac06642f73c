"""Map any decoder-only transformers model to roles (blocks, attention/MLP linears, norms, head).

This is the only module that knows attribute paths. Everything else asks an adapter for
``linear_sites()`` or ``layers`` and works on roles such as ``attn.q`` or ``mlp.down``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Leaf module names of the architectures we know, mapped to canonical roles.
_ROLE_BY_LEAF = {
    "q_proj": "attn.q",
    "k_proj": "attn.k",
    "v_proj": "attn.v",
    "o_proj": "attn.o",
    "qkv_proj": "attn.qkv",
    "query_key_value": "attn.qkv",
    "dense": "attn.o",
    "gate_proj": "mlp.gate",
    "up_proj": "mlp.up",
    "down_proj": "mlp.down",
    "gate_up_proj": "mlp.gate_up",
    "fc1": "mlp.up",
    "fc2": "mlp.down",
}
_FINAL_NORMS = ("norm", "final_layernorm", "ln_f")
_INPUT_NORMS = ("input_layernorm", "ln_1", "attention_norm")
# Roles that read the same tensor (the block's normed hidden state) share an input group.
_SHARED_INPUT = {
    "attn.q": "attn.in",
    "attn.k": "attn.in",
    "attn.v": "attn.in",
    "attn.qkv": "attn.in",
    "mlp.gate": "mlp.in",
    "mlp.up": "mlp.in",
    "mlp.gate_up": "mlp.in",
}
# The norm whose output an input group reads (Llama, Qwen2, Mistral, Phi-3 names).
_NORM_BEFORE = {"attn.in": "input_layernorm", "mlp.in": "post_attention_layernorm"}
_ATTN_PARENTS = ("attn", "attention")
_MLP_PARENTS = ("mlp", "feed_forward", "ffn")


@dataclass(frozen=True)
class LinearSite:
    """One linear layer inside a decoder block (or the LM head, with ``layer=None``)."""

    name: str
    module: nn.Linear
    layer: int | None
    role: str


def _role(path_in_block: str) -> str:
    parts = path_in_block.split(".")
    leaf, parents = parts[-1], parts[:-1]
    family = next(
        (
            f
            for f, keys in (("attn", _ATTN_PARENTS), ("mlp", _MLP_PARENTS))
            if any(k in p.lower() for p in parents for k in keys)
        ),
        None,
    )
    canonical = _ROLE_BY_LEAF.get(leaf)
    if canonical and (family is None or canonical.startswith(family)):
        return canonical
    return f"{family or 'other'}.{leaf}"


_ORIGIN_ATTR = "_autocompress_layer_origin"


def layer_origin(model: nn.Module) -> list[int]:
    """For each decoder block now in ``model``, its index in the model it was pruned from."""
    config: Any = model.config
    return list(getattr(model, _ORIGIN_ATTR, range(config.num_hidden_layers)))


class ModelAdapter:
    """Roles and geometry of a causal LM, found through its structure rather than its class."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.layers_path, self.layers = self._find_layers(model)

    @staticmethod
    def _find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
        n = model.config.num_hidden_layers
        candidates = [
            (name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n and n > 0
        ]
        if not candidates:
            raise ValueError(f"cannot find the {n} decoder layers of {type(model).__name__}")
        # The decoder stack is the shallowest list of the right length.
        return min(candidates, key=lambda c: c[0].count("."))

    # ---- geometry -------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.num_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.num_heads

    @property
    def vocab_size(self) -> int:
        return self.input_embedding.weight.shape[0]

    # ---- modules --------------------------------------------------------------------
    @property
    def input_embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.get_output_embeddings()

    @property
    def final_norm(self) -> nn.Module:
        """The norm between the last block and the LM head."""
        parent_path = self.layers_path.rpartition(".")[0]
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        found = next((getattr(parent, name) for name in _FINAL_NORMS if hasattr(parent, name)), None)
        if found is None:
            raise ValueError(f"no final norm found in {type(parent).__name__}")
        return found

    @property
    def tied_embeddings(self) -> bool:
        return self.lm_head.weight is self.input_embedding.weight

    def linear_sites(self, include_lm_head: bool = False) -> list[LinearSite]:
        """Every ``nn.Linear`` inside the decoder blocks, in execution order."""
        sites = []
        for i, block in enumerate(self.layers):
            for sub, module in block.named_modules():
                if isinstance(module, nn.Linear):
                    sites.append(LinearSite(f"{self.layers_path}.{i}.{sub}", module, i, _role(sub)))
        if include_lm_head:
            sites.append(LinearSite("lm_head", self.lm_head, None, "lm_head"))
        return sites

    def norms(self) -> list[tuple[str, nn.Module]]:
        """Every normalisation layer inside the decoder blocks, then the final norm, by module name."""
        found = [
            (f"{self.layers_path}.{i}.{sub}", module)
            for i, block in enumerate(self.layers)
            for sub, module in block.named_modules()
            if type(module).__name__.endswith("Norm")
        ]
        final = self.final_norm
        return found + [(next(n for n, m in self.model.named_modules() if m is final), final)]

    def block_biases(self) -> list[tuple[str, nn.Parameter]]:
        """The biases of the decoder blocks' linears (Qwen2's q/k/v), by parameter name."""
        return [(f"{site.name}.bias", site.module.bias) for site in self.linear_sites() if site.module.bias is not None]

    def input_groups(self) -> list[tuple[str, list[LinearSite]]]:
        """The decoder linears grouped by the tensor they read, in execution order:
        ``attn.in`` (q/k/v), ``attn.o``, ``mlp.in`` (gate/up), ``mlp.down`` in every block."""
        groups: dict[tuple[int, str], list[LinearSite]] = {}
        for site in self.linear_sites():
            groups.setdefault((site.layer, _SHARED_INPUT.get(site.role, site.role)), []).append(site)
        return [(kind, sites) for (_, kind), sites in groups.items()]

    def input_norm(self, layer: int, group: str) -> nn.Module:
        """The RMSNorm/LayerNorm of block ``layer`` that feeds input group ``attn.in`` or ``mlp.in``."""
        block = self.layers[layer]
        name = _NORM_BEFORE.get(group)
        if name is None or not hasattr(block, name):
            raise ValueError(f"no known norm before {group!r} in {type(block).__name__}")
        return getattr(block, name)

    def untie_lm_head(self) -> None:
        """Give the LM head its own copy of the embedding matrix (an explicit, visible choice)."""
        if self.tied_embeddings:
            self.lm_head.weight = nn.Parameter(self.input_embedding.weight.detach().clone())
            self.config.tie_word_embeddings = False

    # ---- structural edits ------------------------------------------------------------
    def keep_layers(self, keep: list[int]) -> None:
        """Keep only the given decoder blocks (in order) and make config and caches agree."""
        kept = [self.layers[i] for i in sorted(keep)]
        origin = layer_origin(self.model)
        setattr(self.model, _ORIGIN_ATTR, [origin[i] for i in sorted(keep)])
        for new_index, block in enumerate(kept):
            for module in block.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_index
        self.layers = nn.ModuleList(kept)
        parent_path, _, attr = self.layers_path.rpartition(".")
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        setattr(parent, attr, self.layers)
        self.config.num_hidden_layers = len(kept)
        layer_types = getattr(self.config, "layer_types", None)
        if layer_types is not None and len(layer_types) != len(kept):
            self.config.layer_types = [layer_types[i] for i in sorted(keep)]

    # ---- width edits (structured pruning) ---------------------------------------------
    def block_linears(self, layer: int) -> dict[str, LinearSite]:
        """The linears of one decoder block by role (``attn.q`` ... ``mlp.down``)."""
        return {site.role: site for site in self.linear_sites() if site.layer == layer}

    def _separate(self, layer: int, roles: tuple[str, ...]) -> dict[str, nn.Linear]:
        linears = self.block_linears(layer)
        missing = [r for r in roles if r not in linears]
        if missing:
            raise ValueError(
                f"block {layer} has no separate {', '.join(missing)} linears "
                f"(fused projections are not supported for width pruning)"
            )
        return {r: linears[r].module for r in roles}

    def keep_mlp_channels(self, layer: int, keep: torch.Tensor) -> None:
        """Keep only MLP intermediate channels ``keep``: rows of gate/up, columns of down."""
        mlp = self._separate(layer, ("mlp.up", "mlp.down"))
        gate = self.block_linears(layer).get("mlp.gate")
        for linear in ([gate.module] if gate else []) + [mlp["mlp.up"]]:
            slice_linear(linear, rows=keep)
        slice_linear(mlp["mlp.down"], cols=keep)

    def keep_heads(self, layer: int, q_heads: torch.Tensor, kv_heads: torch.Tensor) -> None:
        """Keep query heads ``q_heads`` and KV heads ``kv_heads`` (GQA order: query head j of the result
        reads KV head j // (len(q_heads) // len(kv_heads)))."""
        attn = self._separate(layer, ("attn.q", "attn.k", "attn.v", "attn.o"))
        d = self.head_dim
        q_rows = (q_heads[:, None] * d + torch.arange(d)).flatten()
        kv_rows = (kv_heads[:, None] * d + torch.arange(d)).flatten()
        slice_linear(attn["attn.q"], rows=q_rows)
        slice_linear(attn["attn.k"], rows=kv_rows)
        slice_linear(attn["attn.v"], rows=kv_rows)
        slice_linear(attn["attn.o"], cols=q_rows)
        module = next(m for m in self.layers[layer].modules() if attn["attn.q"] in m.children())
        module.num_key_value_groups = len(q_heads) // len(kv_heads)
        for attr, value in (("num_heads", len(q_heads)), ("num_key_value_heads", len(kv_heads))):
            if hasattr(module, attr):
                setattr(module, attr, value)

    def fill_kv_cache(self, block: nn.Module, hidden_states: torch.Tensor, kwargs: dict) -> None:
        """Write a block's K/V for ``hidden_states`` into the cache without running the block (early exit:
        a token that left earlier still gives later layers keys and values, from its copied state)."""
        attn = next(m for m in block.modules() if hasattr(m, "k_proj") and hasattr(m, "v_proj"))
        x = next(getattr(block, n) for n in _INPUT_NORMS if hasattr(block, n))(hidden_states)
        shape = (*x.shape[:-1], -1, attn.head_dim)
        k = attn.k_proj(x).view(shape)
        if hasattr(attn, "k_norm"):  # Qwen3-style per-head key norm
            k = attn.k_norm(k)
        k, v = k.transpose(1, 2), attn.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = (t.unsqueeze(1) for t in kwargs["position_embeddings"])
        half = k.shape[-1] // 2
        k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin  # rotary, as in Llama
        rest = {
            key: val for key, val in kwargs.items() if key not in ("cache", "position_embeddings", "attention_mask")
        }
        kwargs["cache"].update(k, v, attn.layer_idx, kwargs=rest)

    def set_width(self, intermediate_size: int, num_heads: int, num_kv_heads: int) -> None:
        """Record uniform widths in the config (the stock config has one width per model)."""
        head_dim = self.head_dim
        self.config.intermediate_size = intermediate_size
        self.config.num_attention_heads = num_heads
        self.config.num_key_value_heads = num_kv_heads
        self.config.head_dim = head_dim  # no longer hidden_size // num_heads


def slice_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    """Shrink a linear in place to the given output rows / input columns (bias follows the rows)."""
    with torch.no_grad():
        weight = linear.weight
        if rows is not None:
            weight = weight[rows]
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias[rows].clone(), requires_grad=linear.bias.requires_grad)
        if cols is not None:
            weight = weight[:, cols]
        linear.weight = nn.Parameter(weight.clone(), requires_grad=linear.weight.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape
