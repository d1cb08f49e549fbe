"""Training losses: batch-all triplet (per part) + cross-entropy on the BNNeck's cosine logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import LossConfig


def batch_all_triplet_loss(embedding: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (anchor, positive, negative) triplet of the batch, per part, hinge with `margin`.

    embedding: (N, C, P). The loss of each part is averaged over its *non-zero* triplets (easy triplets
    would otherwise dilute the gradient to nothing as training progresses); parts are then averaged.
    Returns (loss, fraction of active triplets).
    """
    x = embedding.permute(2, 0, 1).float()  # (P, N, C)
    dist = torch.cdist(x, x)  # (P, N, N) Euclidean
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye  # (N, N): [a, p]
    negative = ~same  # [a, n]
    valid = positive[:, :, None] & negative[:, None, :]  # (N, N, N): [a, p, n]
    hinge = F.relu(dist[:, :, :, None] - dist[:, :, None, :] + margin)  # (P, N, N, N)
    hinge = hinge * valid
    active = (hinge > 0).float().sum(dim=(1, 2, 3))
    loss = hinge.sum(dim=(1, 2, 3)) / active.clamp(min=1)
    return loss.mean(), active.sum() / (valid.sum() * x.shape[0]).clamp(min=1)


class GaitLoss(nn.Module):
    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss, and its parts as detached tensors (float() them to log: a host sync on a GPU)."""
        triplet, active = batch_all_triplet_loss(outputs["pre_bnneck"], labels, self.cfg.triplet_margin)
        logits = outputs["logits"].float() * self.cfg.ce_scale  # (N, K, P): cross_entropy treats P as extra dim
        parts = logits.shape[-1]
        ce = F.cross_entropy(logits, labels[:, None].expand(-1, parts), label_smoothing=self.cfg.label_smoothing)
        total = self.cfg.triplet_weight * triplet + self.cfg.ce_weight * ce
        accuracy = (logits.argmax(1) == labels[:, None]).float().mean()
        return total, {
            "loss": total.detach(),
            "triplet": triplet.detach(),
            "ce": ce.detach(),
            "active_triplets": active.detach(),
            "train_acc": accuracy.detach(),
        }
