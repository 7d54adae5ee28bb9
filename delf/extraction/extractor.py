"""Config-driven feature extractor: ``MakeExtractor(config)`` (inference.md §2.3-2.4).

The model is loaded once and every constant input (scales, threshold, feature
count, global scale indices, PCA parameters) is prepared once; the returned
callable then resizes an image (``ResizeImage``), runs the exported model and
post-processes its raw outputs in NumPy.

Export formats (Ours, KB-36): the reference chose the calling convention from
the config flag ``is_tf2_exported`` alone and failed obscurely when it was
wrong. We look at the loaded object too:

* TF2 export (``tf.saved_model.save``; ours, and the reference's training
  exports): called through ``signatures['serving_default']`` with keyword
  inputs. Without the flag it still works, with a warning to set it.
* TF1 export (all released DELF/DELG/GLDv2 models): the loaded object is pruned
  to a function of the named feed/fetch tensors and called positionally.
* Kaggle-format global export (single input ``input_image``, single output
  ``global_descriptor``): scales are baked in and no per-scale rows come out,
  so it cannot be used here; we say so instead of failing later.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from delf.extraction import pca as pca_lib
from delf.extraction import postprocess
from delf.extraction.resize import ResizeImage
from delf.protos import delf_config_pb2

_MIN_HEIGHT = 10
_MIN_WIDTH = 10

_LOCAL_OUTPUTS = ("boxes", "features", "scales", "scores")
_GLOBAL_OUTPUT = "global_descriptors"
_BATCH_SIGNATURE = "serving_batch"  # delf.export.modules.BATCH_SIGNATURE (TF-free import here).


class ExportFormatError(ValueError):
  """The SavedModel cannot be used with this extractor (one-line reason)."""


def _signature_io(signature) -> tuple[set[str], set[str]]:
  inputs = set(signature.structured_input_signature[1].keys())
  outputs = set(signature.structured_outputs.keys())
  return inputs, outputs


def _load_pca(section: str, feature_config) -> pca_lib.PcaParameters:
  """Loads a modality's PCA files; errors say that use_pca defaults to true."""
  try:
    return pca_lib.load_pca_parameters(feature_config.pca_parameters)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{section}.use_pca is true (its default): {e}") from None
  except ValueError as e:
    raise ValueError(
      f"{section}.use_pca is true (its default; set it to false for no PCA): {e}"
    ) from None


class Extractor:
  """Callable ``(image uint8 [H, W, 3], resize_factor=1.0) -> dict`` (see module doc).

  Use :func:`MakeExtractor`. Besides ``__call__``, ``prepare`` (resize only) and
  ``extract_resized`` (model + post-processing) let a caller resize the next
  image in another thread while the model runs.
  """

  def __init__(self, config: delf_config_pb2.DelfConfig):
    self.config = config
    self.use_local = bool(config.use_local_features)
    self.use_global = bool(config.use_global_features)
    if not (self.use_local or self.use_global):
      raise ValueError(
        "Invalid config: at least one of use_local_features and use_global_features must be true"
      )
    num_scales = len(config.image_scales)
    if num_scales == 0:
      raise ValueError("Invalid config: image_scales is empty")
    if any(s <= 0 for s in config.image_scales):
      raise ValueError(
        f"Invalid config: image_scales must be positive: {list(config.image_scales)}"
      )

    import tensorflow as tf  # Imported here: `import delf.extraction` stays light.

    self._tf = tf
    model_path = config.model_path
    if not model_path or not tf.io.gfile.isdir(model_path):
      raise FileNotFoundError(f"model_path is not a SavedModel directory: {model_path!r}")
    try:
      self._model = tf.saved_model.load(model_path)
    except Exception as e:
      raise ValueError(f"cannot load the SavedModel at {model_path}: {e}") from e

    # Constants prepared once.
    self._image_scales = tf.constant(list(config.image_scales), dtype=tf.float32)
    local_config = config.delf_local_config
    self._score_threshold = tf.constant(local_config.score_threshold, dtype=tf.float32)
    self._max_feature_num = tf.constant(local_config.max_feature_num, dtype=tf.int32)
    global_config = config.delf_global_config
    scale_indices = list(global_config.image_scales_ind) or list(range(num_scales))
    bad = [i for i in scale_indices if not 0 <= i < num_scales]
    if self.use_global and bad:
      raise ValueError(
        f"Invalid config: delf_global_config.image_scales_ind {bad} out of range for "
        f"{num_scales} image_scales"
      )
    self._global_scales_ind = tf.constant(scale_indices, dtype=tf.int32)
    self._local_pca = (
      _load_pca("delf_local_config", local_config)
      if self.use_local and local_config.use_pca
      else None
    )
    self._global_pca = (
      _load_pca("delf_global_config", global_config)
      if self.use_global and global_config.use_pca
      else None
    )
    self._run_model = self._make_model_function(model_path)
    self._run_batch = self._make_batch_function()

  # ------------------------------------------------------------------ model calling

  def _make_model_function(self, model_path: str) -> Callable[[np.ndarray], list[np.ndarray]]:
    model = self._model
    signatures = getattr(model, "signatures", None) or {}
    serving = signatures.get("serving_default") if "serving_default" in signatures else None
    is_tf1 = hasattr(model, "prune")
    if serving is not None and not is_tf1:
      inputs, outputs = _signature_io(serving)
      if inputs == {"input_image"} or "global_descriptor" in outputs:
        raise ExportFormatError(
          f"{model_path} is a Kaggle-format export (input_image -> global_descriptor, scales "
          "baked in); it is not usable with this extractor. Export with "
          "export_global_model.py without --input_scales_list (or use "
          "export_local_and_global_model.py) to get per-scale global descriptors."
        )
    if self.config.is_tf2_exported or not is_tf1:
      if serving is None:
        raise ExportFormatError(
          f"{model_path} has no 'serving_default' signature"
          + (" (set is_tf2_exported: false for TF1 exports)" if is_tf1 else "")
        )
      if not self.config.is_tf2_exported:
        warnings.warn(
          f"{model_path} is a TF2 SavedModel but the config does not set "
          "is_tf2_exported: true; calling it through its serving_default signature. "
          "Add `is_tf2_exported: true` to the config to silence this warning.",
          UserWarning,
          stacklevel=3,
        )
      return self._tf2_function(serving, model_path)
    return self._tf1_function(model, model_path)

  def _output_names(self) -> list[str]:
    return (list(_LOCAL_OUTPUTS) if self.use_local else []) + (
      [_GLOBAL_OUTPUT] if self.use_global else []
    )

  def _tf2_function(self, serving, model_path: str):
    tf = self._tf
    inputs, outputs = _signature_io(serving)
    wanted = self._output_names()
    missing_out = [name for name in wanted if name not in outputs]
    required_in = {"input_image", "input_scales"}
    if self.use_local:
      required_in |= {"input_abs_thres", "input_max_feature_num"}
    if self.use_global:
      required_in.add("input_global_scales_ind")
    missing_in = sorted(required_in - inputs)
    if missing_out or missing_in:
      hint = []
      if self.use_local and ("boxes" in missing_out or "input_abs_thres" in missing_in):
        hint.append("it exports no local features (set use_local_features: false?)")
      if self.use_global and (_GLOBAL_OUTPUT in missing_out):
        hint.append("it exports no global descriptors (set use_global_features: false?)")
      raise ExportFormatError(
        f"{model_path}: serving_default lacks inputs {missing_in} / outputs {missing_out} "
        f"needed by this config (has inputs {sorted(inputs)}, outputs {sorted(outputs)})"
        + (": " + "; ".join(hint) if hint else "")
      )
    constants = {"input_scales": self._image_scales}
    # Feed every input the signature declares (a local+global export requires all five
    # even when only one modality is used).
    if "input_abs_thres" in inputs:
      constants["input_abs_thres"] = self._score_threshold
      constants["input_max_feature_num"] = self._max_feature_num
    if "input_global_scales_ind" in inputs:
      constants["input_global_scales_ind"] = self._global_scales_ind
    unknown = inputs - set(constants) - {"input_image"}
    if unknown:
      raise ExportFormatError(f"{model_path}: serving_default has unknown inputs {sorted(unknown)}")

    def run(
      image: np.ndarray, local_overrides: tuple | None = None, image_scales=None
    ) -> list[np.ndarray]:
      feed = dict(constants)
      if local_overrides is not None:
        feed["input_abs_thres"], feed["input_max_feature_num"] = local_overrides
      if image_scales is not None:
        feed["input_scales"] = image_scales
        if "input_global_scales_ind" in feed:  # The config's indices may not fit the new list.
          feed["input_global_scales_ind"] = tf.range(tf.size(image_scales))
      result = serving(input_image=tf.constant(image, dtype=tf.uint8), **feed)
      return [result[name].numpy() for name in wanted]

    return run

  def _tf1_function(self, model, model_path: str):
    tf = self._tf
    feeds = ["input_image:0", "input_scales:0"]
    constants = [self._image_scales]
    if self.use_local:
      feeds += ["input_abs_thres:0", "input_max_feature_num:0"]
      constants += [self._score_threshold, self._max_feature_num]
    if self.use_global:
      feeds.append("input_global_scales_ind:0")
      constants.append(self._global_scales_ind)
    fetches = [f"{name}:0" for name in self._output_names()]
    try:
      pruned = model.prune(feeds, fetches)
    except Exception as e:
      raise ExportFormatError(
        f"{model_path}: cannot find the TF1 tensors {feeds} -> {fetches}: {e}"
      ) from e

    def run(
      image: np.ndarray, local_overrides: tuple | None = None, image_scales=None
    ) -> list[np.ndarray]:
      feed = list(constants)
      if local_overrides is not None:
        feed[1], feed[2] = local_overrides
      if image_scales is not None:
        feed[0] = image_scales
      result = pruned(tf.constant(image, dtype=tf.uint8), *feed)
      return [r.numpy() for r in result]

    return run

  def _make_batch_function(self):
    """The export's optional batch signature (``--batch_signature``), or None."""
    signatures = getattr(self._model, "signatures", None) or {}
    batch = signatures.get(_BATCH_SIGNATURE) if _BATCH_SIGNATURE in signatures else None
    if batch is None or not self.use_local:
      return None
    tf = self._tf
    inputs, _ = _signature_io(batch)
    constants = {
      "input_scales": self._image_scales,
      "input_abs_thres": self._score_threshold,
      "input_max_feature_num": self._max_feature_num,
    }
    if "input_global_scales_ind" in inputs:
      constants["input_global_scales_ind"] = self._global_scales_ind
    wanted = [*_LOCAL_OUTPUTS, "num_features"]
    if self.use_global:
      wanted.append(_GLOBAL_OUTPUT)

    def run(images: np.ndarray) -> list[np.ndarray]:
      result = batch(input_images=tf.constant(images, dtype=tf.uint8), **constants)
      return [result[name].numpy() for name in wanted]

    return run

  @property
  def supports_batches(self) -> bool:
    """Whether the export has the batch signature (``export_*_model.py --batch_signature``)."""
    return self._run_batch is not None

  # ------------------------------------------------------------------ per image

  def prepare(self, image: np.ndarray, resize_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Resizes like the reference (``ResizeImage``); safe to call from another thread."""
    return ResizeImage(np.asarray(image), self.config, resize_factor)

  def _empty_result(self) -> dict:
    result: dict = {"global_descriptor": np.array([])}
    if self.use_local:
      result["local_features"] = {
        "locations": np.array([]),
        "descriptors": np.array([]),
        "scales": np.array([]),
        "attention": np.array([]),
      }
    return result

  def extract_resized(
    self, resized_image: np.ndarray, scale_factors: np.ndarray, image_name: str | None = None
  ) -> dict:
    """Runs the model on an already resized image and post-processes its outputs."""
    height, width = resized_image.shape[:2]
    if height < _MIN_HEIGHT or width < _MIN_WIDTH:
      # KEEP the reference's early return and keys (KB-39); Ours: say so.
      warnings.warn(
        f"{image_name or 'image'} is {height}x{width} px after resizing, smaller than "
        f"{_MIN_HEIGHT}x{_MIN_WIDTH}: no features extracted",
        UserWarning,
        stacklevel=2,
      )
      return self._empty_result()

    return self._postprocess(self._run_model(resized_image), scale_factors)

  def extract_resized_batch(
    self, resized_images: list[np.ndarray], scale_factors: list[np.ndarray]
  ) -> list[dict]:
    """`extract_resized` for images of one size in one model call per pyramid scale.

    Gives each image what `extract_resized` gives it (same selection and order; values
    equal up to float rounding). Needs an export with the batch signature.
    """
    if self._run_batch is None:
      raise ExportFormatError(
        f"{self.config.model_path} has no {_BATCH_SIGNATURE!r} signature: re-export it with "
        "--batch_signature to extract several images per model call"
      )
    shapes = {image.shape for image in resized_images}
    if len(shapes) != 1:
      raise ValueError(f"a batch needs images of one size, got {sorted(shapes)}")
    height, width = resized_images[0].shape[:2]
    if height < _MIN_HEIGHT or width < _MIN_WIDTH:
      return [self.extract_resized(image, f) for image, f in zip(resized_images, scale_factors)]
    boxes, features, scales, scores, counts, *global_rows = self._run_batch(
      np.stack(resized_images)
    )
    bounds = np.concatenate([[0], np.cumsum(counts)])
    results = []
    for i, factors in enumerate(scale_factors):
      rows = slice(bounds[i], bounds[i + 1])
      outputs = [boxes[rows], features[rows], scales[rows], scores[rows]]
      if self.use_global:
        outputs.append(global_rows[0][i])
      results.append(self._postprocess(outputs, factors))
    return results

  def _postprocess(self, outputs: list[np.ndarray], scale_factors: np.ndarray) -> dict:
    result = {}
    if self.use_global:
      result["global_descriptor"] = postprocess.PostProcessGlobalDescriptors(
        outputs[-1], self._global_pca is not None, self._global_pca
      )
    if self.use_local:
      boxes, features, scales, scores = outputs[:4]
      attention = np.reshape(scores, [-1])
      locations, descriptors = postprocess.DelfFeaturePostProcessing(
        boxes, features, self._local_pca is not None, self._local_pca
      )
      if not self.config.delf_local_config.use_resized_coordinates:
        locations = locations / scale_factors
      result["local_features"] = {
        "locations": locations,
        "descriptors": descriptors,
        "scales": scales,  # 1 / pyramid scale, not corrected by resizing (KEEP, KB-37).
        "attention": attention,
      }
    return result

  def max_attention(self, resized_image: np.ndarray) -> float | None:
    """Highest attention score of any cell of any scale (KB-58: threshold calibration).

    Runs the model once more with ``score_threshold`` 0 (attention is a softplus, so
    every cell passes) and one feature. None without local features or cells.
    """
    if not self.use_local:
      return None
    tf = self._tf
    outputs = self._run_model(
      resized_image, (tf.constant(0.0, tf.float32), tf.constant(1, tf.int32))
    )
    scores = np.reshape(outputs[3], [-1])
    return float(scores.max()) if scores.size else None

  def attention_scores(self, resized_image: np.ndarray) -> np.ndarray:
    """Attention score of every cell of every pyramid scale (KB-58: threshold calibration).

    Runs the model with ``score_threshold`` 0 (attention is a softplus, so every cell
    passes) and no feature limit. Empty without local features.
    """
    if not self.use_local:
      return np.zeros([0], np.float32)
    tf = self._tf
    unlimited = tf.constant(np.iinfo(np.int32).max, tf.int32)
    outputs = self._run_model(resized_image, (tf.constant(0.0, tf.float32), unlimited))
    return np.reshape(outputs[3], [-1])

  def local_cells(
    self,
    resized_image: np.ndarray,
    image_scales: list[float],
    score_threshold: float,
    max_feature_num: int,
  ) -> tuple[np.ndarray, np.ndarray]:
    """Raw receptive boxes and attention scores the model selects with these settings.

    The config's scales, threshold and feature count are replaced for this call only
    (attention pictures: one scale at a time, every cell or the kept ones).

    Returns:
      float32 boxes ``[N, 4]`` (ymin, xmin, ymax, xmax in ``resized_image`` pixels) and
      scores ``[N]``, best first.
    """
    if not self.use_local:
      raise ValueError("the config does not use local features (use_local_features: false)")
    tf = self._tf
    outputs = self._run_model(
      resized_image,
      (tf.constant(score_threshold, tf.float32), tf.constant(max_feature_num, tf.int32)),
      tf.constant(list(image_scales), tf.float32),
    )
    return np.reshape(outputs[0], [-1, 4]), np.reshape(outputs[3], [-1])

  def __call__(
    self, image: np.ndarray, resize_factor: float = 1.0, image_name: str | None = None
  ) -> dict:
    resized_image, scale_factors = self.prepare(image, resize_factor)
    return self.extract_resized(resized_image, scale_factors, image_name)


def MakeExtractor(config: delf_config_pb2.DelfConfig) -> Extractor:
  """Loads the model named by ``config`` and returns the per-image extraction function.

  The function maps ``(image uint8 [H, W, 3], resize_factor=1.0)`` to
  ``{'global_descriptor': [D]}`` and/or ``{'local_features': {'locations' [N, 2] (y, x),
  'descriptors' [N, D], 'scales' [N], 'attention' [N]}}``.

  Raises:
    ValueError: neither local nor global features are enabled, or the config is invalid.
    FileNotFoundError: model or PCA files are missing.
    ExportFormatError (a ValueError): the SavedModel does not fit the config.
  """
  return Extractor(config)
