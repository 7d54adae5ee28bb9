"""DELG: DELF with GeM + embedding global path and an ArcFace cosine classifier (§5.8)."""

from __future__ import annotations

from collections.abc import Sequence

from delf.model.backbone import RESNET50_BLOCK_COUNTS
from delf.model.delf_model import Delf
from delf.model.heads import CosineClassifier


class Delg(Delf):
  """DELG: ``Delf`` with ``pooling="gem"``, an embedding Dense and a cosine classifier.

  Args:
    scale_factor_init: the (non-trainable) cosine-logit scale s.
    arcface_margin: ArcFace margin m in radians, applied only in training.
    Other arguments: as for ``Delf``.
  """

  model_class_name = "Delg"

  def __init__(
    self,
    block3_strides: bool = True,
    name: str = "DELG",
    gem_power: float = 3.0,
    embedding_layer_dim: int = 2048,
    scale_factor_init: float = 45.25,
    arcface_margin: float = 0.1,
    use_dim_reduction: bool = False,
    reduced_dimension: int = 128,
    dim_expand_channels: int = 1024,
    num_classes: int | None = None,
    block_counts: Sequence[int] = RESNET50_BLOCK_COUNTS,
    width_factor: float = 1.0,
    **kwargs,
  ):
    # Read by _make_desc_classifier during Delf.__init__.
    self.scale_factor_init = float(scale_factor_init)
    self.arcface_margin = float(arcface_margin)
    super().__init__(
      block3_strides=block3_strides,
      name=name,
      pooling="gem",
      gem_power=gem_power,
      embedding_layer=True,
      embedding_layer_dim=embedding_layer_dim,
      use_dim_reduction=use_dim_reduction,
      reduced_dimension=reduced_dimension,
      dim_expand_channels=dim_expand_channels,
      num_classes=num_classes,
      block_counts=block_counts,
      width_factor=width_factor,
      **kwargs,
    )

  def _make_desc_classifier(self):
    return CosineClassifier(
      self.num_classes,
      scale_factor_init=self.scale_factor_init,
      arcface_margin=self.arcface_margin,
      name="desc_fc",
    )

  def desc_logits(self, prelogits, labels=None, training: bool = False):
    """Scaled cosine logits; ArcFace margin on the true class only when training."""
    return self.desc_classification(prelogits, labels, training=training)

  def get_config(self) -> dict:
    config = super().get_config()
    for key in ("pooling", "embedding_layer"):
      config.pop(key)
    config["scale_factor_init"] = self.scale_factor_init
    config["arcface_margin"] = self.arcface_margin
    return config
