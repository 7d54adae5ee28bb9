"""Model-independent export graph functions against toy models (training.md §7.2-7.5)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from delf.export import nms
from delf.export.global_features import ExtractGlobalFeatures
from delf.export.local_and_global import ExtractLocalAndGlobalFeatures
from delf.export.local_features import ExtractLocalFeatures
from delf.export.pyramid import NormalizeImages
from delf.export.receptive_field import CalculateKeypointCenters, CalculateReceptiveBoxes

TOY_IMAGE = np.array([[[0, 255, 255], [128, 64, 196]], [[0, 0, 32], [32, 128, 16]]], dtype=np.uint8)


def _toy_attention_model(images):
  """inference.md §8.5: attention = pixel norm, features = pixel tiled 341x + one zero."""
  attention = tf.norm(images, axis=3, keepdims=True)
  features = tf.concat([tf.tile(images, [1, 1, 1, 341]), tf.zeros_like(images[..., :1])], 3)
  return attention, features


def test_receptive_boxes_reference_vector():
  boxes = CalculateReceptiveBoxes(height=1, width=2, rf=291, stride=32, padding=145)
  np.testing.assert_array_equal(boxes, [[-145, -145, 145, 145], [-145, -113, 145, 177]])


def test_receptive_boxes_row_major_and_centres():
  boxes = CalculateReceptiveBoxes(3, 4, 291, 16, 145).numpy()
  assert boxes.shape == (12, 4)
  centres = CalculateKeypointCenters(boxes).numpy()
  y, x = np.divmod(np.arange(12), 4)
  np.testing.assert_array_equal(centres, np.stack([16 * y, 16 * x], 1))


def test_keypoint_centers_reference_vector():
  centres = CalculateKeypointCenters([[-10, 0, 11, 21], [-2.5, 5, 18.5, 26], [45, -2.5, 66, 18.5]])
  np.testing.assert_array_equal(centres, [[0.5, 10.5], [8.0, 15.5], [55.5, 8.0]])


def test_normalize_images():
  np.testing.assert_array_equal(
    NormalizeImages(np.array([0, 128, 255], np.uint8)), [-1, 0, 127 / 128]
  )


def test_extract_local_features_reference_toy_model():
  boxes, features, scales, scores = ExtractLocalFeatures(
    TOY_IMAGE, [1.0], 10, 1.5, 1.0, _toy_attention_model, stride_factor=2.0
  )
  np.testing.assert_array_equal(boxes, [[-145, -145, 145, 145], [-113, -145, 177, 145]])
  np.testing.assert_array_equal(scales, [1.0, 1.0])
  expected_rows = np.array([[-1, 127 / 128, 127 / 128], [-1, -1, -0.75]], np.float32)
  expected = np.concatenate([np.tile(expected_rows, [1, 341]), np.zeros([2, 1])], 1)
  np.testing.assert_allclose(features, expected, rtol=0, atol=1e-7)
  assert features.shape == (2, 1024)
  np.testing.assert_allclose(scores, [[1.723042], [1.600781]], rtol=1e-6)
  assert [t.dtype for t in (boxes, features, scales, scores)] == [tf.float32] * 4


def _identity_model(images):
  """Attention = red channel + 2 (> 0), features = the pixel itself: cells are pixels."""
  return images[..., :1] + 2.0, images


def test_local_pyramid_sizes_boxes_and_scales():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8)
  # 5*0.5 = 2.5 -> 2 and 3*0.5 = 1.5 -> 2 (half to even); 5*1.5 = 7.5 -> 8, 3*1.5 = 4.5 -> 4.
  scales = [0.5, 1.5]
  boxes, features, feature_scales, scores = ExtractLocalFeatures(
    image, scales, 1000, -1.0, 1.0, _identity_model, stride_factor=1.0
  )
  assert boxes.shape == (2 * 2 + 8 * 4, 4)
  normalised = (image.astype(np.float32)[None] - 128) / 128
  expected = []
  for scale, (h, w) in zip(scales, [(2, 2), (8, 4)]):
    level = tf.image.resize(normalised, [h, w], method="bilinear").numpy()[0]
    for y in range(h):
      for x in range(w):
        box = np.array([16 * y - 145, 16 * x - 145, 16 * y + 145, 16 * x + 145]) / scale
        expected.append((level[y, x, 0] + 2, box, level[y, x], 1 / scale))
  # Output is sorted by descending score with ties in candidate order.
  order = sorted(range(len(expected)), key=lambda k: -expected[k][0])
  np.testing.assert_allclose(scores[:, 0], [expected[k][0] for k in order], rtol=1e-6)
  np.testing.assert_allclose(boxes, [expected[k][1] for k in order], rtol=1e-6)
  np.testing.assert_allclose(features, [expected[k][2] for k in order], atol=1e-6)
  np.testing.assert_allclose(feature_scales, [expected[k][3] for k in order], rtol=1e-6)
  assert np.all(np.diff(scores[:, 0]) <= 0)


def test_local_threshold_is_inclusive_and_max_feature_num_caps():
  def flat_model(images):
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    attention = tf.reshape(tf.cast(tf.range(h * w), tf.float32), [1, h, w, 1])
    return attention, tf.zeros([1, h, w, 5])

  image = np.zeros((3, 4, 3), np.uint8)
  _, features, _, scores = ExtractLocalFeatures(image, [1.0], 100, 7.0, 1.0, flat_model, 1.0)
  np.testing.assert_array_equal(scores[:, 0], [11, 10, 9, 8, 7])
  assert features.shape == (5, 5)
  _, _, _, scores = ExtractLocalFeatures(image, [1.0], 3, 0.0, 1.0, flat_model, 1.0)
  np.testing.assert_array_equal(scores[:, 0], [11, 10, 9])
  boxes, features, scales, scores = ExtractLocalFeatures(
    image, [1.0], 3, 100.0, 1.0, flat_model, 1.0
  )
  assert boxes.shape == (0, 4) and features.shape == (0, 5)
  assert scales.shape == (0,) and scores.shape == (0, 1)


def _greedy_nms(boxes, scores, max_out, thresh):
  order = sorted(range(len(scores)), key=lambda k: -scores[k])
  kept = []

  def iou(a, b):
    area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)  # noqa: E731
    inter = [max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]
    union = area(a) + area(b) - area(inter)
    return area(inter) / union if union > 0 else 0.0

  for k in order:
    if len(kept) < max_out and all(iou(boxes[k], boxes[j]) <= thresh for j in kept):
      kept.append(k)
  return kept


def test_nms_matches_greedy_reference_and_keeps_tie_order():
  rng = np.random.default_rng(1)
  corners = rng.uniform(0, 50, size=(60, 2))
  boxes = np.concatenate([corners, corners + rng.uniform(5, 30, size=(60, 2))], 1)
  scores = rng.integers(0, 6, size=60).astype(np.float32)  # many ties
  for thresh in (0.0, 0.3, 0.7):
    got = nms.non_max_suppression(boxes.astype(np.float32), scores, 25, thresh).numpy()
    assert list(got) == _greedy_nms(boxes, scores, 25, thresh)
  top_k = nms.non_max_suppression(boxes.astype(np.float32), scores, 25, 1.0).numpy()
  assert list(top_k) == sorted(range(60), key=lambda k: -scores[k])[:25]
  assert nms.non_max_suppression(boxes.astype(np.float32), scores, -3, 1.0).shape == (0,)
  with pytest.raises(ValueError, match="iou"):
    nms.validate_iou_threshold(1.5)


def _mean_colour_model(images):
  return tf.reduce_mean(images, axis=[1, 2])  # [1, 3]


@pytest.mark.parametrize(
  ("pool", "normalize"),
  [("None", False), ("None", True), ("average", False), ("sum", True), ("average", True)],
)
def test_global_features_selection_pooling_normalisation(pool, normalize):
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
  scales = [1.0, 0.5, 2.0]
  got = ExtractGlobalFeatures(
    image, scales, [2, 0, 7, 0], _mean_colour_model, pool, normalize, descriptor_dim=3
  ).numpy()
  normalised = (image.astype(np.float32)[None] - 128) / 128
  rows = []
  for index in (0, 2):  # increasing scale index; 7 is out of range, repeats count once
    size = np.round(np.array([9, 7], np.float32) * np.float32(scales[index])).astype(int)
    rows.append(tf.image.resize(normalised, size).numpy().mean(axis=(0, 1, 2)))
  rows = np.array(rows)
  if pool == "None":
    expected = rows / np.linalg.norm(rows, axis=1, keepdims=True) if normalize else rows
  else:
    expected = rows.mean(0) if pool == "average" else rows.sum(0)
    expected = expected / np.linalg.norm(expected) if normalize else expected
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("pool", "shape"), [("None", (0, 3)), ("average", (3,)), ("sum", (3,))])
def test_global_features_empty_selection(pool, shape):
  image = np.full((4, 4, 3), 200, np.uint8)
  got = ExtractGlobalFeatures(
    image, [1.0], tf.zeros([0], tf.int32), _mean_colour_model, pool, True, descriptor_dim=3
  ).numpy()
  assert got.shape == shape
  np.testing.assert_array_equal(got, np.zeros(shape))


def test_global_features_bad_pool_type():
  with pytest.raises(ValueError, match="multi_scale_pool_type"):
    ExtractGlobalFeatures(
      np.zeros((4, 4, 3), np.uint8), [1.0], [0], _mean_colour_model, "max", descriptor_dim=3
    )


def _combined_model(images):
  attention, features = _identity_model(images)
  return _mean_colour_model(images), attention, features


def test_local_and_global_agrees_with_separate_functions():
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
  scales = [0.5, 1.0, 1.5]

  @tf.function(
    input_signature=[
      tf.TensorSpec([None, None, 3], tf.uint8),
      tf.TensorSpec([None], tf.float32),
      tf.TensorSpec([], tf.int32),
      tf.TensorSpec([], tf.float32),
      tf.TensorSpec([None], tf.int32),
    ]
  )
  def combined(image, scales, max_feature_num, abs_thres, global_scales_ind):
    return ExtractLocalAndGlobalFeatures(
      image, scales, max_feature_num, abs_thres, global_scales_ind, 1.0, _combined_model, 2.0
    )

  for ind in ([1, 2], [], [0]):
    *local, global_descriptors = combined(image, scales, 20, 2.0, tf.constant(ind, tf.int32))
    expected_local = ExtractLocalFeatures(image, scales, 20, 2.0, 1.0, _identity_model, 2.0)
    for got, expected in zip(local, expected_local):
      np.testing.assert_allclose(got, expected, rtol=1e-6)
    expected_global = ExtractGlobalFeatures(
      image, scales, tf.constant(ind, tf.int32), _mean_colour_model, descriptor_dim=3
    )
    assert global_descriptors.shape == (len(ind), 3)
    np.testing.assert_allclose(global_descriptors, expected_global, rtol=1e-6)
  assert combined.get_concrete_function().structured_outputs[1].shape.as_list() == [None, 3]


def test_empty_scale_list_is_a_readable_error():
  with pytest.raises(tf.errors.InvalidArgumentError, match="input_scales must contain"):
    ExtractLocalFeatures(TOY_IMAGE, tf.zeros([0]), 10, 0.0, 1.0, _toy_attention_model, 2.0)
