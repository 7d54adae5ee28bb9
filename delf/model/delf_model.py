"""The DELF model: backbone + attention (+ autoencoder) + classifier heads (§5.4–5.7).

Built in one step: ``num_classes`` is a constructor argument (no
``init_classifiers``), and the constructor creates every variable with one
forward pass on a small dummy batch, so a ``tf.train.Checkpoint`` can be read
or written straight away and ImageNet weights can be loaded without a
throw-away training step (KB-16). ``num_classes=None`` builds no classifier
heads (the export models).

Checkpoint keys come from the attribute names ``backbone``, ``attention``,
``autoencoder``, ``desc_classification`` and ``attn_classification``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from delf.model import heads
from delf.model.attention import AttentionModel
from delf.model.autoencoder import AutoencoderModel
from delf.model.backbone import RESNET50_BLOCK_COUNTS, ResNet50

# Side of the dummy batch that builds the variables (any size >= 32 works).
_BUILD_IMAGE_SIZE = 64


class Delf(keras.Model):
  """DELF: ResNet-50 global descriptor + attention-selected block3 local features.

  Args:
    block3_strides: sub-sample block3 to stride 32 (§5.1).
    name: model name.
    pooling: global pooling of block4 ("avg" for DELF).
    gem_power: GeM p when ``pooling="gem"``.
    embedding_layer: Dense after pooling (DELG).
    embedding_layer_dim: its size.
    use_dim_reduction: add the autoencoder; local features become its reduced output.
    reduced_dimension: local descriptor size with the autoencoder.
    dim_expand_channels: channels reconstructed by the autoencoder; must equal the
      backbone's block3 channels (``local_feature_channels``).
    num_classes: build the classifier heads for this many classes (None: none).
    block_counts, width_factor: backbone depth/width (tiny test variants).
  """

  model_class_name = "Delf"

  def __init__(
    self,
    block3_strides: bool = True,
    name: str = "DELF",
    pooling: str = "avg",
    gem_power: float = 3.0,
    embedding_layer: bool = False,
    embedding_layer_dim: int = 2048,
    use_dim_reduction: bool = False,
    reduced_dimension: int = 128,
    dim_expand_channels: int = 1024,
    num_classes: int | None = None,
    block_counts: Sequence[int] = RESNET50_BLOCK_COUNTS,
    width_factor: float = 1.0,
    **kwargs,
  ):
    super().__init__(name=name, **kwargs)
    self.block3_strides = bool(block3_strides)
    self.pooling = pooling
    self.gem_power = float(gem_power)
    self.embedding_layer = bool(embedding_layer)
    self.embedding_layer_dim = int(embedding_layer_dim)
    self.use_dim_reduction = bool(use_dim_reduction)
    self.reduced_dimension = int(reduced_dimension)
    self.dim_expand_channels = int(dim_expand_channels)
    self.num_classes = int(num_classes) if num_classes else None
    self.block_counts = tuple(int(n) for n in block_counts)
    self.width_factor = float(width_factor)

    self.backbone = ResNet50(
      block3_strides=self.block3_strides,
      pooling=pooling,
      gem_power=self.gem_power,
      embedding_layer=self.embedding_layer,
      embedding_layer_dim=self.embedding_layer_dim,
      block_counts=self.block_counts,
      width_factor=self.width_factor,
      name="backbone",
    )
    self.local_feature_channels = self.backbone.local_feature_channels
    self.attention = AttentionModel(name="attention")
    if self.use_dim_reduction:
      if self.dim_expand_channels != self.local_feature_channels:
        raise ValueError(
          f"dim_expand_channels={self.dim_expand_channels} must equal the block3 channels "
          f"of the backbone ({self.local_feature_channels}) when use_dim_reduction is on"
        )
      self.autoencoder = AutoencoderModel(
        self.reduced_dimension, self.dim_expand_channels, name="autoencoder"
      )
    if self.num_classes:
      self.desc_classification = self._make_desc_classifier()
      self.attn_classification = heads.DenseClassifier(
        self.num_classes, name="att_fc", dtype="float32"
      )
    self._build_variables()

  def _make_desc_classifier(self) -> keras.layers.Layer:
    return heads.DenseClassifier(self.num_classes, name="desc_fc", dtype="float32")

  def _build_variables(self) -> None:
    images = tf.zeros([1, _BUILD_IMAGE_SIZE, _BUILD_IMAGE_SIZE, 3])
    outputs = self.global_and_local_forward_pass(images, training=False)
    if self.num_classes:
      self.desc_logits(outputs["global_descriptor"], tf.zeros([1], tf.int64))
      self.attn_logits(outputs["attention_prelogits"])
    self.built = True

  @property
  def descriptor_dim(self) -> int:
    """Size of the global descriptor."""
    return self.backbone.descriptor_dim

  @property
  def local_descriptor_dim(self) -> int:
    """Size of the local descriptors returned by ``build_call``."""
    return self.reduced_dimension if self.use_dim_reduction else self.local_feature_channels

  def global_and_local_forward_pass(self, images, training: bool = True) -> dict:
    """Everything the training step needs, as a dict.

    Keys: ``global_descriptor`` (prelogits ``[B, D]``), ``endpoints`` (backbone dict),
    ``block3`` (stop-gradient), ``attention_prelogits`` ``[B, C]``, ``attention_prob``,
    ``attention_score`` ``[B, h, w, 1]``, ``expanded`` / ``reduced`` (None without the
    autoencoder). Attention scores come from block3; with the autoencoder the
    reconstructed features are pooled (KB-17).
    """
    endpoints = self.backbone(images, training=training)
    block3 = tf.stop_gradient(endpoints["block3"])
    expanded = reduced = None
    if self.use_dim_reduction:
      expanded, reduced = self.autoencoder(block3)
      attn_prelogits, prob, score = self.attention(block3, targets=expanded, training=training)
    else:
      attn_prelogits, prob, score = self.attention(block3, training=training)
    return {
      "global_descriptor": endpoints["global_descriptor"],
      "endpoints": {k: v for k, v in endpoints.items() if k != "global_descriptor"},
      "block3": block3,
      "attention_prelogits": attn_prelogits,
      "attention_prob": prob,
      "attention_score": score,
      "expanded": expanded,
      "reduced": reduced,
    }

  def desc_logits(self, prelogits, labels=None, training: bool = False):
    """Descriptor-head logits (float32). DELF ignores the labels."""
    del labels, training
    return self.desc_classification(prelogits)

  def attn_logits(self, attn_prelogits):
    """Attention-head logits (float32)."""
    return self.attn_classification(attn_prelogits)

  def build_call(self, images, training: bool = False) -> dict:
    """Export forward pass: ``global_descriptor``, ``attention_prob``, ``local_features``."""
    outputs = self.global_and_local_forward_pass(images, training=training)
    local = outputs["reduced"] if self.use_dim_reduction else outputs["block3"]
    return {
      "global_descriptor": outputs["global_descriptor"],
      "attention_prob": outputs["attention_prob"],
      "local_features": local,
    }

  def global_call(self, images, training: bool = False):
    """Backbone + pooling (+ embedding): the global descriptor ``[B, D]``."""
    return self.backbone(images, training=training)["global_descriptor"]

  def call(self, images, training: bool = False):
    return self.build_call(images, training=training)

  def get_config(self) -> dict:
    return {
      "block3_strides": self.block3_strides,
      "name": self.name,
      "pooling": self.pooling,
      "gem_power": self.gem_power,
      "embedding_layer": self.embedding_layer,
      "embedding_layer_dim": self.embedding_layer_dim,
      "use_dim_reduction": self.use_dim_reduction,
      "reduced_dimension": self.reduced_dimension,
      "dim_expand_channels": self.dim_expand_channels,
      "num_classes": self.num_classes,
      "block_counts": list(self.block_counts),
      "width_factor": self.width_factor,
    }

  @classmethod
  def from_config(cls, config: dict, custom_objects=None):
    return cls(**config)


from delf.model.delg_model import Delg  # noqa: E402  (re-export; Delg subclasses Delf)

__all__ = ["Delf", "Delg"]
