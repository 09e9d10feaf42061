"""Model classes shipped with crossinfer, allow-listed by default.

A spec names a PyTorch state dict's class by import path; these are always
allowed (``crossinfer.models:*``). Anything else must be added to the load
policy's allow-list by whoever runs the pipeline or the service.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """A plain multi-layer perceptron: ``sizes=[in, hidden..., out]``, ReLU between layers."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class MeanPoolClassifier(nn.Module):
    """Classifies a variable-length 1-D signal: embeds each value, mean-pools
    over the length, then a linear layer. Accepts any input length, which makes
    it the reference model for ragged inputs."""

    def __init__(self, hidden: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed(x.unsqueeze(-1)))
        out: torch.Tensor = self.out(h.mean(dim=1))
        return out
