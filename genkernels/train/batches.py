"""The seeded, resumable order in which training items are visited."""
from __future__ import annotations

from typing import Any

import torch


class SeededBatches:
    """Infinite stream of index batches: back-to-back seeded permutations of range(num_items).

    A batch may straddle two epochs, so no item is dropped and datasets smaller than a batch
    work. The whole state (generator state, current permutation, position) is checkpointed, so
    a resumed run visits exactly the items an uninterrupted one would.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int):
        if num_items <= 0:
            raise ValueError(f"the training set must not be empty, got {num_items} items")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.int64)
        self.position = 0
        self.epoch = -1

    def next_indices(self) -> torch.Tensor:
        """The next global batch of item indices, (batch_size,) int64."""
        parts, needed = [], self.batch_size
        while needed:
            if self.position == len(self.order):
                self.order = torch.randperm(self.num_items, generator=self.generator)
                self.position = 0
                self.epoch += 1
            take = min(needed, len(self.order) - self.position)
            parts.append(self.order[self.position:self.position + take])
            self.position += take
            needed -= take
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "order": self.order.clone(),
            "position": self.position,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = state["order"]
        if order.numel() not in (0, self.num_items):
            raise ValueError(
                f"data order covers {order.numel()} items but the training set has {self.num_items}; "
                "resume with the dataset the checkpoint was trained on"
            )
        self.generator.set_state(state["generator"])
        self.order = order.to(torch.int64).clone()
        self.position = int(state["position"])
        self.epoch = int(state["epoch"])
