"""Helpers shared by the model tests."""

from typing import List

import torch


def losses_on_one_batch(model, batch, steps: int = 15, lr: float = 1e-3) -> List[float]:
    """Adam steps on one batch; the loss after each step's forward pass."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
