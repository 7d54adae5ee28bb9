"""Pixel normalisation and the image pyramid of the exported graphs (training.md §7.3).

The uint8 image is normalised once, ``(x - 128) / 128`` (the same mapping as
training, §4.3), and each pyramid level is a bilinear ``tf.image.resize``
(half-pixel centres, no antialias) of the normalised image to
``round(H * s), round(W * s)`` with TensorFlow's half-to-even rounding.
"""

from __future__ import annotations

import tensorflow as tf


def NormalizeImages(
  images, pixel_value_offset: float = 128.0, pixel_value_scale: float = 128.0
) -> tf.Tensor:
  """Returns ``(images - offset) / scale`` as float32."""
  return (tf.cast(images, tf.float32) - pixel_value_offset) / pixel_value_scale


def scaled_size(original_size_float: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
  """Returns the int32 ``[2]`` size of a pyramid level: ``round(size * scale)`` in float32."""
  return tf.cast(tf.round(original_size_float * scale), tf.int32)


def resize_to_scale(image_batch: tf.Tensor, original_size_float: tf.Tensor, scale) -> tf.Tensor:
  """Resizes a normalised ``[1, H, W, C]`` batch to one pyramid level."""
  return tf.image.resize(
    image_batch, scaled_size(original_size_float, scale), method="bilinear", antialias=False
  )


def prepare_image(image, normalization_function=NormalizeImages) -> tuple[tf.Tensor, tf.Tensor]:
  """Returns the normalised ``[1, H, W, 3]`` batch and the float32 ``[2]`` size ``(H, W)``."""
  image = tf.convert_to_tensor(image)
  original_size_float = tf.cast(tf.shape(image)[:2], tf.float32)
  image_batch = tf.expand_dims(
    normalization_function(image, pixel_value_offset=128.0, pixel_value_scale=128.0), 0
  )
  return image_batch, original_size_float
