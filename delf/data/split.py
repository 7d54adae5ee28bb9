"""The reference's stratified train/validation split — KEEP exactly (training.md §3.3, KB-7).

Published splits depend on the generator construction and the draw order, so
both are reproduced step by step: one ``RandomState(MT19937(SeedSequence(seed)))``;
per label group (first-appearance order) a shuffle of ``arange(n)`` and a cutoff
``max(1, int(f * n))`` for validation; then one shuffle over the concatenated
validation part and one over the train part, in that order. We permute indices
instead of the reference's 3xN string array: the resulting order is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_generator(seed: int) -> np.random.RandomState:
  """The reference's generator (not the same stream as ``RandomState(seed)``)."""
  return np.random.RandomState(np.random.MT19937(np.random.SeedSequence(seed)))


def train_validation_split(
  labels: Sequence[int], validation_split_size: float, seed: int
) -> tuple[list[int], list[int]]:
  """Returns ``(validation_indices, train_indices)`` into ``labels``, in output order.

  Raises:
    ValueError: if ``validation_split_size`` is not strictly between 0 and 1.
  """
  if not 0.0 < validation_split_size < 1.0:
    raise ValueError(
      f"validation_split_size must be strictly between 0 and 1, got {validation_split_size}"
    )
  groups: dict[int, list[int]] = {}
  for index, label in enumerate(labels):
    groups.setdefault(label, []).append(index)
  rng = split_generator(seed)
  validation_parts, train_parts = [], []
  for members in groups.values():
    n_label = len(members)
    permutation = np.arange(n_label)
    rng.shuffle(permutation)
    shuffled = np.asarray(members, dtype=np.int64)[permutation]
    cutoff = max(1, int(validation_split_size * n_label))
    validation_parts.append(shuffled[:cutoff])
    train_parts.append(shuffled[cutoff:])
  ordered = []
  for parts in (validation_parts, train_parts):
    part = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    permutation = np.arange(len(part))
    rng.shuffle(permutation)
    ordered.append([int(i) for i in part[permutation]])
  return ordered[0], ordered[1]


def shard_boundaries(num_items: int, num_shards: int) -> list[int]:
  """``linspace(0, n, num_shards + 1)`` truncated to int (builtin ``int``: KB-2)."""
  return [int(b) for b in np.linspace(0, num_items, num_shards + 1).astype(int)]
