"""The distillation loss: KL of softened next-token distributions plus hidden-state MSE.

``KL(teacher_T || student_T) * T^2`` per token (Hinton et al., 2015: the ``T^2`` keeps gradient
magnitudes comparable across temperatures), averaged over tokens. Hidden states are matched at
proportional depth: student block ``j`` (of ``L_s``) with teacher block ``round((j + 1) L_t / L_s)``,
which is block for block when the depth is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over tokens of ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``."""
    vocab = student_logits.shape[-1]
    log_q = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2


def matched_layers(student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
    """(student, teacher) indices into ``hidden_states`` (0 = embeddings) of the matched block outputs."""
    return [(j, round(j * teacher_depth / student_depth)) for j in range(1, student_depth + 1)]


def hidden_mse(student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean over matched block outputs of the MSE between hidden states, each normalised by the
    teacher's mean square at that depth (residual-stream scales grow with depth)."""
    pairs = matched_layers(len(student_hidden) - 1, len(teacher_hidden) - 1)
    total = student_hidden[0].new_zeros((), dtype=torch.float32)
    for s, t in pairs:
        target = teacher_hidden[t].float()
        total = total + F.mse_loss(student_hidden[s].float(), target) / target.pow(2).mean().clamp_min(1e-12)
    return total / len(pairs)
