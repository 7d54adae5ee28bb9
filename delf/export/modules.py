"""``tf.Module`` wrappers whose ``tf.function`` signatures are the reference's (training.md §7.6-7.8).

Input names, dtypes and shapes are an interface: the extractor calls
``signatures['serving_default']`` with exactly these keyword names
(inference.md §2.3), and the output keys are ``boxes``, ``features``,
``scales``, ``scores`` and ``global_descriptors`` / ``global_descriptor``.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from delf.export.batched import ExtractLocalFeaturesBatch
from delf.export.global_features import ExtractGlobalFeatures, validate_pool_type
from delf.export.local_and_global import ExtractLocalAndGlobalFeatures
from delf.export.local_features import ExtractLocalFeatures
from delf.export.nms import validate_iou_threshold
from delf.export.receptive_field import stride_factor

INPUT_IMAGE = tf.TensorSpec([None, None, 3], tf.uint8, name="input_image")
INPUT_SCALES = tf.TensorSpec([None], tf.float32, name="input_scales")
INPUT_MAX_FEATURE_NUM = tf.TensorSpec([], tf.int32, name="input_max_feature_num")
INPUT_ABS_THRES = tf.TensorSpec([], tf.float32, name="input_abs_thres")
INPUT_GLOBAL_SCALES_IND = tf.TensorSpec([None], tf.int32, name="input_global_scales_ind")
INPUT_IMAGES = tf.TensorSpec([None, None, None, 3], tf.uint8, name="input_images")

BATCH_SIGNATURE = "serving_batch"
"""Optional signature (export flag ``--batch_signature``): ``input_images`` uint8
``[N, H, W, 3]`` of one size, the other inputs as ``serving_default``; outputs flat
``boxes``/``features``/``scales``/``scores`` with ``num_features [N]`` rows per image
(plus ``global_descriptors [N, S', D]`` for local+global exports)."""


def _with_unknown_columns(descriptors: tf.Tensor) -> tf.Tensor:
  """Declares ``[?, ?]`` like the reference's ``global_descriptors`` (values unchanged)."""
  return tf.raw_ops.PlaceholderWithDefault(input=descriptors, shape=[None, None])


def _local_outputs(boxes, features, scales, scores) -> dict[str, tf.Tensor]:
  return {
    "boxes": tf.identity(boxes, name="boxes"),
    "features": tf.identity(features, name="features"),
    "scales": tf.identity(scales, name="scales"),
    "scores": tf.identity(scores, name="scores"),
  }


class LocalFeatureModule(tf.Module):
  """Local DELF export: attention-selected block3 (or autoencoder) descriptors.

  Args:
    model: a ``Delf``/``Delg`` whose ``build_call`` gives ``attention_prob`` and
      ``local_features``.
    block3_strides: the model's flag; sets the receptive-box stride (32 or 16).
    iou: NMS IoU threshold baked into the graph.
  """

  def __init__(self, model, block3_strides: bool, iou: float):
    super().__init__(name="ExtractLocalModule")
    self.model = model
    self._stride_factor = stride_factor(block3_strides)
    self._iou = validate_iou_threshold(iou)

  def _model_fn(self, images):
    outputs = self.model.build_call(images, training=False)
    return outputs["attention_prob"], outputs["local_features"]

  @tf.function(input_signature=[INPUT_IMAGE, INPUT_SCALES, INPUT_MAX_FEATURE_NUM, INPUT_ABS_THRES])
  def ExtractFeatures(self, input_image, input_scales, input_max_feature_num, input_abs_thres):
    return _local_outputs(
      *ExtractLocalFeatures(
        input_image,
        input_scales,
        input_max_feature_num,
        input_abs_thres,
        self._iou,
        self._model_fn,
        self._stride_factor,
      )
    )

  @tf.function(input_signature=[INPUT_IMAGES, INPUT_SCALES, INPUT_MAX_FEATURE_NUM, INPUT_ABS_THRES])
  def ExtractFeaturesBatch(
    self, input_images, input_scales, input_max_feature_num, input_abs_thres
  ):
    *local, counts = ExtractLocalFeaturesBatch(
      input_images,
      input_scales,
      input_max_feature_num,
      input_abs_thres,
      self._iou,
      self._model_fn,
      self._stride_factor,
    )
    outputs = _local_outputs(*local)
    outputs["num_features"] = tf.identity(counts, name="num_features")
    return outputs


class GlobalFeatureModule(tf.Module):
  """Global export: one descriptor per selected scale, optionally pooled (Kaggle format).

  Args:
    model: a ``Delf``/``Delg``; only ``global_call`` is used.
    multi_scale_pool_type: ``'None'``, ``'average'`` or ``'sum'``.
    normalize_global_descriptor: L2-normalise rows / the pooled vector.
    input_scales_list: fixed scales for ``ExtractFeaturesFixedScales`` (None: not built).
  """

  def __init__(
    self,
    model,
    multi_scale_pool_type: str = "None",
    normalize_global_descriptor: bool = False,
    input_scales_list: Sequence[float] | None = None,
  ):
    super().__init__(name="ExtractGlobalModule")
    self.model = model
    self._pool_type = validate_pool_type(multi_scale_pool_type)
    self._normalize = bool(normalize_global_descriptor)
    self._descriptor_dim = int(model.descriptor_dim)
    self._output_key = "global_descriptors" if self._pool_type == "None" else "global_descriptor"
    if input_scales_list is not None:
      if not input_scales_list:
        raise ValueError("input_scales_list must contain at least one scale")
      scales = tf.constant([float(s) for s in input_scales_list], tf.float32)
      self._fixed_scales = scales

      @tf.function(input_signature=[INPUT_IMAGE])
      def extract_fixed_scales(input_image):
        return self.ExtractFeatures(input_image, scales, tf.range(tf.size(scales)))

      self.ExtractFeaturesFixedScales = extract_fixed_scales

  def _model_fn(self, images):
    return self.model.global_call(images, training=False)

  @tf.function(input_signature=[INPUT_IMAGE, INPUT_SCALES, INPUT_GLOBAL_SCALES_IND])
  def ExtractFeatures(self, input_image, input_scales, input_global_scales_ind):
    descriptors = ExtractGlobalFeatures(
      input_image,
      input_scales,
      input_global_scales_ind,
      self._model_fn,
      multi_scale_pool_type=self._pool_type,
      normalize_global_descriptor=self._normalize,
      descriptor_dim=self._descriptor_dim,
    )
    if self._pool_type == "None":
      descriptors = _with_unknown_columns(descriptors)
    return {self._output_key: tf.identity(descriptors, name=self._output_key)}


class LocalAndGlobalFeatureModule(tf.Module):
  """DELG export: local features and per-scale global descriptors from one pass per scale.

  Args:
    model: a ``Delg``/``Delf`` whose ``build_call`` gives all three outputs.
    block3_strides: the model's flag; sets the receptive-box stride (32 or 16).
    iou: NMS IoU threshold baked into the graph.
  """

  def __init__(self, model, block3_strides: bool, iou: float):
    super().__init__(name="ExtractLocalAndGlobalModule")
    self.model = model
    self._stride_factor = stride_factor(block3_strides)
    self._iou = validate_iou_threshold(iou)

  def _model_fn(self, images):
    outputs = self.model.build_call(images, training=False)
    return outputs["global_descriptor"], outputs["attention_prob"], outputs["local_features"]

  @tf.function(
    input_signature=[
      INPUT_IMAGE,
      INPUT_SCALES,
      INPUT_MAX_FEATURE_NUM,
      INPUT_ABS_THRES,
      INPUT_GLOBAL_SCALES_IND,
    ]
  )
  def ExtractFeatures(
    self, input_image, input_scales, input_max_feature_num, input_abs_thres, input_global_scales_ind
  ):
    boxes, features, scales, scores, global_descriptors = ExtractLocalAndGlobalFeatures(
      input_image,
      input_scales,
      input_max_feature_num,
      input_abs_thres,
      input_global_scales_ind,
      self._iou,
      self._model_fn,
      self._stride_factor,
    )
    outputs = _local_outputs(boxes, features, scales, scores)
    outputs["global_descriptors"] = tf.identity(
      _with_unknown_columns(global_descriptors), name="global_descriptors"
    )
    return outputs

  @tf.function(
    input_signature=[
      INPUT_IMAGES,
      INPUT_SCALES,
      INPUT_MAX_FEATURE_NUM,
      INPUT_ABS_THRES,
      INPUT_GLOBAL_SCALES_IND,
    ]
  )
  def ExtractFeaturesBatch(
    self,
    input_images,
    input_scales,
    input_max_feature_num,
    input_abs_thres,
    input_global_scales_ind,
  ):
    *local, counts, global_descriptors = ExtractLocalFeaturesBatch(
      input_images,
      input_scales,
      input_max_feature_num,
      input_abs_thres,
      self._iou,
      self._model_fn,
      self._stride_factor,
      global_scales_ind=input_global_scales_ind,
    )
    outputs = _local_outputs(*local)
    outputs["num_features"] = tf.identity(counts, name="num_features")
    outputs["global_descriptors"] = tf.identity(global_descriptors, name="global_descriptors")
    return outputs
