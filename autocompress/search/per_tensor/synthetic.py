"""Synthetic per-tensor problems with a known answer, for tests and sampler benchmarks.

Shapes follow SmolLM2-135M (30 layers x q k v o gate up down, + the tied embedding: 211 tensors); level
bytes follow GGUF types (Q8_0 8.5, Q6_K 6.56, Q5_1 6, Q5_0 5.5, Q4_K / IQ4_NL / Q4_0 4.5, Q3_K 3.44 bits per
weight; K-quants only where the row length is a multiple of 256, as in llama.cpp). The true error of a
tensor at a level is ``sensitivity x numel x 4^-effective_bits`` (quantisation noise power) with a per-(tensor,
level) deviation; the measured KL is their sum times ``1 + interaction * sin(phase(x))`` (a deterministic
non-additive part); proxies are the truth times lognormal noise, per tensor and per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna

from autocompress.search.per_tensor.knapsack import solve_exact
from autocompress.search.per_tensor.problem import Encoding, LevelProblem, TensorChoice, uniform_configs

# name: (bits per weight as stored, effective bits of its error, needs row % 256 == 0)
GGUF_LEVELS = {
    "Q8_0": (8.5, 8.3, False),
    "Q6_K": (6.5625, 6.4, True),
    "Q5_1": (6.0, 5.6, False),
    "Q5_0": (5.5, 5.3, False),
    "Q4_K": (4.5, 4.6, True),
    "IQ4_NL": (4.5, 4.55, False),
    "Q4_0": (4.5, 4.3, False),
    "Q3_K": (3.4375, 3.3, True),
}
SMOLLM2_ROLES = {  # role: (rows, row length), hidden 576, intermediate 1536, 3 kv heads x 64
    "attn.q": (576, 576),
    "attn.k": (192, 576),
    "attn.v": (192, 576),
    "attn.o": (576, 576),
    "mlp.gate": (1536, 576),
    "mlp.up": (1536, 576),
    "mlp.down": (576, 1536),
}
ROLE_SENSITIVITY = {
    "attn.q": 0.5,
    "attn.k": 0.5,
    "attn.v": 2.0,
    "attn.o": 1.0,
    "mlp.gate": 0.7,
    "mlp.up": 0.7,
    "mlp.down": 2.0,
    "embedding": 1.0,
}


@dataclass
class Synthetic:
    problem: LevelProblem
    true: np.ndarray  # (T, L) true additive error per (tensor, level); inf where no level
    interaction: float
    phase: np.ndarray  # (T, L) phases of the non-additive part

    def __post_init__(self) -> None:
        self.enc = Encoding(self.problem)

    def kl_of(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        rows = np.arange(X.shape[1])
        additive = self.true[rows, X].sum(axis=1)
        return additive * (1 + self.interaction * np.sin(self.phase[rows, X].sum(axis=1)))

    def kl(self, params: dict[str, str]) -> float:
        x = self.enc.encode(params)
        if x is None:
            raise ValueError("Synthetic.kl: incomplete parameters")
        return float(self.kl_of(x)[0])

    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        params = {t.param: trial.suggest_categorical(t.param, list(t.levels)) for t in self.problem.tensors}
        return self.kl(params), self.problem.total_bytes(params)

    def optimum(self, budget: float) -> tuple[np.ndarray, float]:
        """The exact optimum of the true additive error within ``budget`` total bytes, and its measured KL."""
        x = solve_exact(self.true, self.enc.nbytes, self.enc.valid, budget - self.problem.fixed_bytes)
        if x is None:
            raise ValueError(f"Synthetic.optimum: nothing fits {budget} bytes")
        return x, float(self.kl_of(x)[0])


def make_problem(
    layers: int = 30,
    seed: int = 0,
    proxy_noise: float = 0.3,
    tensor_noise: float = 0.5,
    interaction: float = 0.1,
    with_proxy: bool = True,
    levels: tuple[str, ...] = tuple(GGUF_LEVELS),
    targets: tuple[str, ...] = ("Q4_0", "Q5_0", "Q6_K"),
    uniform_q4_kl: float = 0.1,
    all_levels: bool = False,
) -> Synthetic:
    """A SmolLM2-shaped synthetic problem (``layers`` x 7 roles + embedding); ``targets``: the uniform level
    configurations whose sizes are the size targets (as llama.cpp presets); ``all_levels``: every tensor
    offers every level (no row-length rule, no embedding subset)."""
    rng = np.random.default_rng(seed)
    shapes = [
        (f"{i}.{role}", rows, cols, ROLE_SENSITIVITY[role] * (3.0 if i in (0, layers - 1) else 1.0))
        for i in range(layers)
        for role, (rows, cols) in SMOLLM2_ROLES.items()
    ]
    shapes.append(("embedding", 49152, 576, ROLE_SENSITIVITY["embedding"]))
    T = len(shapes)
    sens = rng.lognormal(0.0, 1.0, T)
    tensor_bias = rng.normal(0.0, tensor_noise, T)
    tensors, true_rows = [], []
    for t, (name, rows, cols, role_sens) in enumerate(shapes):
        offered = [lv for lv in levels if all_levels or not GGUF_LEVELS[lv][2] or cols % 256 == 0]
        if name == "embedding" and not all_levels:
            offered = [lv for lv in offered if lv in ("Q8_0", "Q6_K", "Q5_0", "Q4_0")] or offered
        numel = rows * cols
        nbytes = tuple(numel * GGUF_LEVELS[lv][0] / 8 for lv in offered)
        err = np.array([sens[t] * role_sens * numel * 4.0 ** -GGUF_LEVELS[lv][1] for lv in offered])
        err *= rng.lognormal(0.0, 0.2, len(offered))
        proxy = err * np.exp(tensor_bias[t] + rng.normal(0.0, proxy_noise, len(offered)))
        tensors.append(
            TensorChoice(
                f"tensor_levels.{name}",
                tuple(f"imatrix/{lv}" for lv in offered),
                nbytes,
                tuple(float(p) for p in proxy) if with_proxy else None,
            )
        )
        true_rows.append(err)
    L = max(len(r) for r in true_rows)
    true = np.full((T, L), np.inf)
    for t, r in enumerate(true_rows):
        true[t, : len(r)] = r
    fixed = float(layers * 2 * 576 * 4 + 576 * 4)  # norms in F32
    problem = LevelProblem(tuple(tensors), fixed_bytes=fixed)
    enc = Encoding(problem)
    uniform = {enc.names[i]: x for i, x in enumerate(uniform_configs(enc))}
    rows_ = np.arange(T)
    q4 = uniform.get("imatrix/Q4_0")  # scale the truth so that uniform Q4_0 has this KL (proxies keep their units)
    if q4 is not None:
        true *= uniform_q4_kl / true[rows_, q4].sum()
    sizes = tuple(float(enc.bytes_of(uniform[f"imatrix/{lv}"])) for lv in targets if f"imatrix/{lv}" in uniform)
    problem = LevelProblem(tuple(tensors), fixed_bytes=fixed, size_targets=sizes)
    phase = rng.uniform(0, 2 * np.pi, (T, L))
    return Synthetic(problem, true, interaction, phase)
