"""Groups consecutive same-size images into batches for the export's batch signature.

``extract_features.py --batch_size=N`` (with an export made with ``--batch_signature``)
runs up to N images of one resized size per model call; each image still gets exactly
what the one-image path gives it (`Extractor.extract_resized_batch`). Images of another
size end the current batch; an image that failed to load, or a batch that failed as a
whole, is handed back without features, so the caller takes its one-image path and
reports errors per image.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator


def _resolved(future: concurrent.futures.Future):
  try:
    return future.result()
  except Exception:
    return None


def batched(
  extractor, prefetched: Iterable[tuple[str, concurrent.futures.Future]], batch_size: int
) -> Iterator[tuple[str, concurrent.futures.Future, dict | None]]:
  """Yields ``(path, future of the prepared image, features or None)`` in list order."""
  if batch_size <= 1:
    for path, future in prefetched:
      yield path, future, None
    return
  pending: list[tuple[str, concurrent.futures.Future, tuple | None]] = []

  def flush():
    ready = [(i, item[2]) for i, item in enumerate(pending) if item[2] is not None]
    features: dict[int, dict] = {}
    if len(ready) > 1:
      try:
        results = extractor.extract_resized_batch(
          [prepared[0] for _, prepared in ready], [prepared[1] for _, prepared in ready]
        )
        features = {i: result for (i, _), result in zip(ready, results)}
      except Exception:  # Each image then runs (and reports its error) on its own.
        features = {}
    for i, (path, future, _) in enumerate(pending):
      yield path, future, features.get(i)
    pending.clear()

  shape = None
  for path, future in prefetched:
    prepared = _resolved(future)
    if prepared is not None:
      if shape is not None and prepared[0].shape != shape:
        yield from flush()
      shape = prepared[0].shape
    pending.append((path, future, prepared))
    if sum(item[2] is not None for item in pending) >= batch_size:
      yield from flush()
      shape = None
  yield from flush()
