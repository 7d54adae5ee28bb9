"""The reference's train/validation split (training.md §3.3, KB-7) and shard boundaries."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from delf.data import split

# Ten images (indices 0..9) with labels; groups in first-appearance order:
# label 5 -> [0, 2, 3, 6, 8], label 3 -> [1, 4, 7, 9], label 7 -> [5].
LABELS = [5, 3, 5, 5, 3, 7, 5, 3, 5, 3]


def test_generator_draws_expected_permutations():
  # The five shuffles of arange(n), in the spec's order, for seed 0.
  rng = split.split_generator(0)
  draws = []
  for n in (5, 4, 1, 3, 7):  # groups 5, 3, 7; then validation (3), then train (7)
    permutation = np.arange(n)
    rng.shuffle(permutation)
    draws.append(permutation.tolist())
  assert draws == [[3, 0, 2, 1, 4], [2, 1, 3, 0], [0], [1, 0, 2], [4, 1, 0, 2, 3, 6, 5]]
  # Not the same stream as the legacy RandomState(seed).
  legacy = np.random.RandomState(0)
  permutation = np.arange(5)
  legacy.shuffle(permutation)
  assert permutation.tolist() != draws[0]


def test_hand_computed_split_seed_0():
  # Group 5 reordered by [3,0,2,1,4] -> [6,0,3,2,8]; cutoff max(1,int(0.2*5)) = 1 -> val [6].
  # Group 3 reordered by [2,1,3,0] -> [7,4,9,1]; cutoff max(1,int(0.8)) = 1 -> val [7].
  # Group 7 -> [5]; cutoff 1 -> val [5], no train image.
  # Validation [6,7,5] permuted by [1,0,2] -> [7,6,5];
  # train [0,3,2,8,4,9,1] permuted by [4,1,0,2,3,6,5] -> [4,3,0,2,8,1,9].
  validation, train = split.train_validation_split(LABELS, 0.2, seed=0)
  assert validation == [7, 6, 5]
  assert train == [4, 3, 0, 2, 8, 1, 9]


def test_split_properties_on_random_labels():
  rng = np.random.default_rng(7)
  labels = [*rng.integers(0, 40, size=600).tolist(), 1000, 1001]  # two singleton classes
  validation, train = split.train_validation_split(labels, 0.2, seed=3)
  assert sorted(validation + train) == list(range(len(labels)))
  sizes = collections.Counter(labels)
  val_sizes = collections.Counter(labels[i] for i in validation)
  for label, n in sizes.items():
    assert val_sizes[label] == max(1, int(0.2 * n)), label
  train_labels = {labels[i] for i in train}
  assert 1000 not in train_labels and 1001 not in train_labels
  # The seed matters, and the same seed reproduces.
  assert split.train_validation_split(labels, 0.2, seed=3) == (validation, train)
  assert split.train_validation_split(labels, 0.2, seed=4) != (validation, train)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_open_interval_raises(fraction):
  with pytest.raises(ValueError, match="strictly between 0 and 1"):
    split.train_validation_split(LABELS, fraction, seed=0)


def test_shard_boundaries():
  assert split.shard_boundaries(10, 4) == [0, 2, 5, 7, 10]  # linspace 0,2.5,5,7.5,10
  assert split.shard_boundaries(3, 5) == [0, 0, 1, 1, 2, 3]  # empty shards allowed
  assert split.shard_boundaries(0, 2) == [0, 0, 0]
  assert all(type(b) is int for b in split.shard_boundaries(7, 3))
