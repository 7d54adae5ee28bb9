"""NumPy post-processing of exported-model outputs (inference.md §2.4-2.6).

The exported models return raw boxes, descriptors and per-scale global
descriptors; everything after that happens here, in float32 NumPy with
TensorFlow's semantics (so no TensorFlow is needed to post-process):

* L2 normalisation divides by ``sqrt(max(sum(x^2), 1e-12))`` (``tf.nn.l2_normalize``).
* Local: keypoints are receptive-box centres (y, x) (KEEP, KB-42); descriptors
  are L2-normalised, optionally PCA-projected (+ whitening) and normalised again.
* Global: each per-scale row is normalised (optionally PCA + normalise), the rows
  are summed, and the sum is normalised.

The TF versions of the receptive-box helpers used inside the exported graph live
in ``delf.export.receptive_field``.
"""

from __future__ import annotations

import numpy as np

from delf.extraction.pca import ApplyPcaAndWhitening, PcaParameters

_L2_EPSILON = 1e-12


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """``tf.nn.l2_normalize`` in NumPy: x / sqrt(max(sum(x^2), 1e-12)), float32."""
  x = np.asarray(x, dtype=np.float32)
  squared = np.sum(np.square(x), axis=axis, keepdims=True)
  return (x / np.sqrt(np.maximum(squared, np.float32(_L2_EPSILON)))).astype(np.float32)


def NormalizePixelValues(
  image: np.ndarray, pixel_value_offset: float = 128.0, pixel_value_scale: float = 128.0
) -> np.ndarray:
  """``(image - offset) / scale`` in float32 (the exported models do this internally)."""
  return (np.asarray(image, dtype=np.float32) - np.float32(pixel_value_offset)) / np.float32(
    pixel_value_scale
  )


def CalculateReceptiveBoxes(
  height: int, width: int, rf: float, stride: float, padding: float
) -> np.ndarray:
  """One [ymin, xmin, ymax, xmax] box per feature-map cell, row-major (NumPy float32)."""
  y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  coordinates = np.stack([y.ravel(), x.ravel()], axis=1).astype(np.float32)
  point_boxes = np.concatenate([coordinates, coordinates], axis=1)
  bias = np.array([-padding, -padding, -padding + rf - 1, -padding + rf - 1], np.float32)
  return np.float32(stride) * point_boxes + bias


def CalculateKeypointCenters(boxes: np.ndarray) -> np.ndarray:
  """Box centres ``([ymin, xmin] + [ymax, xmax]) / 2`` -> [N, 2] (y, x)."""
  boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
  return (boxes[:, :2] + boxes[:, 2:]) / np.float32(2.0)


def PostProcessDescriptors(
  descriptors: np.ndarray, use_pca: bool, pca_parameters: PcaParameters | None = None
) -> np.ndarray:
  """L2-normalises rows; with PCA, projects (+ whitens) and L2-normalises again."""
  descriptors = l2_normalize(descriptors, axis=1)
  if use_pca:
    if pca_parameters is None:
      raise ValueError("use_pca is set but no PCA parameters were given")
    descriptors = l2_normalize(ApplyPcaAndWhitening(descriptors, pca_parameters), axis=1)
  return descriptors


def DelfFeaturePostProcessing(
  boxes: np.ndarray,
  descriptors: np.ndarray,
  use_pca: bool,
  pca_parameters: PcaParameters | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Returns (keypoint centres [N, 2] (y, x), post-processed descriptors)."""
  return CalculateKeypointCenters(boxes), PostProcessDescriptors(
    descriptors, use_pca, pca_parameters
  )


def PostProcessGlobalDescriptors(
  descriptors: np.ndarray, use_pca: bool, pca_parameters: PcaParameters | None = None
) -> np.ndarray:
  """Per-scale rows [S, D] -> final descriptor [D]: normalise (+PCA) rows, sum, normalise."""
  rows = PostProcessDescriptors(np.asarray(descriptors, np.float32), use_pca, pca_parameters)
  return l2_normalize(np.sum(rows, axis=0), axis=0)
