"""Which image files the training pipeline can decode (training.md §3.4, KB-4).

The dataset build keeps an image only if TensorFlow's ``tf.io.decode_jpeg(...,
channels=3)`` — the decoder of the training pipeline (KB-5) and of the reference's
build — turns it into a 3-D, 3-channel image. Using the very decoder of training
guarantees that whatever the build accepts decodes at training time; a second
decoder (Pillow) could accept a file TensorFlow rejects, which would crash
training days later. As in the reference, this keeps PNG or GIF data named
``.jpg`` (``decode_jpeg`` decodes them) and rejects data it decodes to 4-D
(WebP, animated GIF) or cannot decode (truncated, corrupt, not an image).

Speed: JPEG data is decoded at 1/8 scale (libjpeg's DCT scaling still reads and
entropy-decodes every byte, so damaged data fails the same way), its size comes
from the header; every file is checked in TensorFlow's own thread pool through
``tf.data``. Files that fail are decoded once more, one by one, to report why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from delf import tf_startup

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_MAX_PROBLEM_LENGTH = 200


def _decoded_size(tf, data):
  """(height, width) of ``data`` decoded as the pipeline does; fails like the pipeline would."""
  is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), _JPEG_MAGIC)
  # The pipeline needs [H, W, 3]; WebP and animated data decode to 4-D and fail here.
  image = tf.ensure_shape(tf.io.decode_jpeg(data, channels=3, ratio=8), [None, None, 3])
  decoded_shape = tf.shape(image)  # returned, so the decode always runs
  size = tf.cond(
    is_jpeg,
    lambda: tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int32),
    lambda: decoded_shape[:2],
  )
  return size[0], size[1], decoded_shape


def check_image(path: str) -> tuple[int, int, str | None]:
  """``(height, width, problem or None)`` of one file, as the pipeline would decode it."""
  tf = tf_startup.import_tensorflow()
  try:
    data = tf.io.read_file(path)
  except Exception as e:  # NotFoundError, PermissionDenied...
    return 0, 0, f"cannot read file ({_first_line(e)})"
  if int(tf.strings.length(data)) == 0:
    return 0, 0, "empty file"
  try:
    image = tf.io.decode_jpeg(data, channels=3)
  except Exception as e:  # InvalidArgumentError for data TensorFlow cannot decode.
    raw = data.numpy()
    if raw.startswith(_JPEG_MAGIC) and _JPEG_END not in raw[-64:]:
      return 0, 0, f"truncated JPEG (no end-of-image marker; {_first_line(e)})"
    return 0, 0, f"cannot decode as an image ({_first_line(e)})"
  if image.shape.rank != 3:
    return 0, 0, f"decodes to a {image.shape.rank}-D array, not one image (WebP or animated data?)"
  height, width = int(image.shape[0]), int(image.shape[1])
  if height <= 0 or width <= 0:
    return 0, 0, "image has no pixels"
  return height, width, None


def _first_line(error: Exception) -> str:
  text = getattr(error, "message", None) or str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  line = lines[-1] if lines else type(error).__name__
  # TensorFlow prefixes messages with a function node name in braces.
  if line.startswith("{{") and "}}" in line:
    line = line.split("}}", 1)[1].strip()
  line = line.split(" [Op:", 1)[0]
  return line[:_MAX_PROBLEM_LENGTH]


def check_images(
  paths: Sequence[str], progress: Callable[[int], None] | None = None
) -> list[tuple[int, int, str | None]]:
  """``check_image`` for many files, in parallel; results in the order of ``paths``."""
  if not paths:
    return []
  tf = tf_startup.import_tensorflow()
  results: list[tuple[int, int, str | None] | None] = [None] * len(paths)

  def check(index, path):
    height, width, decoded_shape = _decoded_size(tf, tf.io.read_file(path))
    return index, height, width, decoded_shape  # the decoded shape keeps the decode in the graph

  dataset = tf.data.Dataset.from_tensor_slices(
    (tf.range(len(paths), dtype=tf.int64), tf.constant(list(paths), dtype=tf.string))
  )
  dataset = dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  # A file that fails to decode is dropped here and examined one by one below.
  dataset = dataset.ignore_errors().batch(256)
  for indices, heights, widths, _ in dataset.as_numpy_iterator():
    for index, height, width in zip(indices, heights, widths):
      problem = None if height > 0 and width > 0 else "image has no pixels"
      results[int(index)] = (0, 0, problem) if problem else (int(height), int(width), None)
    if progress is not None:
      progress(len(indices))
  failed = [i for i, r in enumerate(results) if r is None]
  for i in failed:
    results[i] = check_image(paths[i])
  if progress is not None and failed:
    progress(len(failed))
  return results  # type: ignore[return-value]
