"""Hidden states -> one vector per item. Written for any padding side: positions come from the mask."""

from __future__ import annotations

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only. hidden: (B, T, D); mask: (B, T) of 0/1."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    total = (hidden * weights).sum(dim=1, dtype=torch.float32)
    count = weights.sum(dim=1, dtype=torch.float32).clamp(min=1.0)
    return total / count


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return torch.arange(mask.shape[1], device=mask.device).unsqueeze(0).expand_as(mask)


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token of each row: right padding puts it before the pads, left padding at the end."""
    index = torch.where(mask.bool(), _positions(mask), -1).max(dim=1).values.clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].float()


def first_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first real token ([CLS] for BERT-style models), also under left padding."""
    big = mask.shape[1]
    index = torch.where(mask.bool(), _positions(mask), big).min(dim=1).values.clamp(max=big - 1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].float()


def pool(hidden_states: tuple[torch.Tensor, ...], mask: torch.Tensor, pooling: str, layer: int | None) -> torch.Tensor:
    """Pool a batch under one (pooling, layer) choice; returns float32 (B, D)."""
    if pooling == "mean_all_layers":
        return torch.stack([masked_mean(h, mask) for h in hidden_states]).mean(dim=0)
    hidden = hidden_states[layer if layer is not None else -1]
    if pooling == "mean":
        return masked_mean(hidden, mask)
    if pooling == "last_token":
        return last_token(hidden, mask)
    if pooling == "cls":
        return first_token(hidden, mask)
    raise ValueError(f"unknown pooling {pooling!r}")
