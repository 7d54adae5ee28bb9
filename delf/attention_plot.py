"""Attention pictures: where DELF looks (``visualize_attention.py``, TensorBoard images).

The exported local-feature signatures return only the selected cells (receptive
boxes and attention scores), not the dense attention map, and they are binding.
The dense map of one pyramid scale is recovered from them without changing the
export: the model is called with that scale alone, ``input_abs_thres = -inf`` and
``input_max_feature_num = 2**31 - 1``, so every cell passes the threshold and the
top-K keeps them all (with the export default ``--iou=1.0`` nothing is
suppressed). A cell's box centre is ``stride * (row, col) / scale`` in pixels of
the image the model saw (``receptive_field``: 291 px field, 145 px padding), so
the centres give back each score's row and column and the stride. A second call
with the config's ``score_threshold`` and ``max_feature_num`` gives the keypoints
DELF keeps at that scale (on its own, not competing with other scales).

The grid is drawn on the image by bilinear interpolation between cell centres
(edges clamped), coloured with ``turbo`` (blue = low, red = high) and blended
half-and-half with the photo; a colour bar gives the raw attention values (the
scale of ``score_threshold``, KB-58) with the threshold marked, the title names
the image, the scale and the number of kept keypoints, drawn as white rings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys

import numpy as np

COLORMAP = "turbo"
ALPHA = 0.5
COLORBAR_LABEL = "attention score (raw, the scale of score_threshold)"
ALL_CELLS = np.iinfo(np.int32).max


@functools.cache
def _colormap_table(name: str = COLORMAP) -> np.ndarray:
  """256 x 3 float RGB lookup table of a matplotlib colour map."""
  import matplotlib

  return np.asarray(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3], np.float64)


# ------------------------------------------------------------------ grid recovery


def cell_centres(boxes: np.ndarray) -> np.ndarray:
  """``(y, x)`` centres ``[N, 2]`` of ``[N, 4]`` receptive boxes."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return (boxes[:, :2] + boxes[:, 2:]) / 2.0


def attention_grid(boxes: np.ndarray, scores: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
  """Rebuilds the dense attention map of one scale from every cell's box and score.

  Args:
    boxes: ``[N, 4]`` receptive boxes of all cells of one scale (divided by the scale).
    scores: ``[N]`` their attention scores.
    scale: the pyramid scale the boxes come from.

  Returns:
    ``grid [rows, cols]`` (NaN where no cell came back) and the stride in pixels of
    the scaled image (16 or 32; 16 when the map has a single cell).
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  if scores.size == 0:
    raise ValueError("the model returned no attention cells")
  positions = cell_centres(boxes) * scale  # stride * (row, col)
  spacings = [np.diff(np.unique(np.round(positions[:, k], 3))) for k in (0, 1)]
  spacings = [d[d > 0.5] for d in spacings]
  nonzero = [float(d.min()) for d in spacings if d.size]
  stride = float(round(min(nonzero))) if nonzero else 16.0
  index = np.round(positions / stride).astype(np.int64)
  if index.min() < 0:
    raise ValueError("receptive boxes do not lie on a cell grid")
  grid = np.full(index.max(axis=0) + 1, np.nan)
  grid[index[:, 0], index[:, 1]] = scores
  return grid, stride


def upsample(grid: np.ndarray, height: int, width: int, spacing: tuple[float, float]) -> np.ndarray:
  """Bilinear values of ``grid`` at every pixel of a ``height x width`` image.

  Cell ``(i, j)`` sits at pixel ``(i * spacing[0], j * spacing[1])`` (its receptive
  field centre); pixels beyond the outer cells take the edge values. NaN cells
  (not returned by the model) stay NaN wherever they have weight.
  """
  grid = np.asarray(grid, np.float64)
  rows, cols = grid.shape
  gy = np.clip(np.arange(height) / spacing[0], 0, rows - 1)
  gx = np.clip(np.arange(width) / spacing[1], 0, cols - 1)
  y0 = np.floor(gy).astype(int)
  x0 = np.floor(gx).astype(int)
  y1 = np.minimum(y0 + 1, rows - 1)
  x1 = np.minimum(x0 + 1, cols - 1)
  wy = (gy - y0)[:, None]
  wx = (gx - x0)[None, :]
  top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
  bottom = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
  # Zero weights must not spread NaN: 0 * NaN is NaN, so take exact cells where w == 0.
  top = np.where(wx == 0, grid[y0][:, x0], top)
  bottom = np.where(wx == 0, grid[y1][:, x0], bottom)
  return np.where(wy == 0, top, top * (1 - wy) + bottom * wy)


# ------------------------------------------------------------------ colours


def colourize(values: np.ndarray, vmin: float, vmax: float, colormap: str = COLORMAP) -> np.ndarray:
  """Float RGB ``[..., 3]`` in [0, 1] of ``values`` through the colour map (NaN -> 0)."""
  span = vmax - vmin if vmax > vmin else 1.0
  unit = np.clip((np.nan_to_num(np.asarray(values, np.float64), nan=vmin) - vmin) / span, 0, 1)
  return _colormap_table(colormap)[np.round(unit * 255).astype(np.int64)]


def overlay(
  image: np.ndarray,
  heat: np.ndarray,
  vmin: float,
  vmax: float,
  alpha: float = ALPHA,
  colormap: str = COLORMAP,
) -> np.ndarray:
  """Blends the coloured ``heat [H, W]`` over the uint8 RGB ``image``; NaN pixels stay as is."""
  image = np.asarray(image)
  colours = colourize(heat, vmin, vmax, colormap) * 255.0
  weight = np.where(np.isnan(heat), 0.0, alpha)[..., None]
  blended = (1.0 - weight) * image.astype(np.float64) + weight * colours
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def batch_overlays(images: np.ndarray, prob: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
  """Training batch pictures: ``images [N, H, W, 3]`` in [-1, 1], ``prob [N, h, w(, 1)]``.

  Each map is scaled by its own maximum (0 = blue, the image's highest attention =
  red) and its cells are centred at ``(i * H / h, j * W / w)``, as the exported
  receptive boxes place them. Returns uint8 ``[N, H, W, 3]``.
  """
  images = np.asarray(images, np.float64)
  prob = np.asarray(prob, np.float64)
  if prob.ndim == 4:
    prob = prob[..., 0]
  height, width = images.shape[1:3]
  pictures = []
  for image, grid in zip(images, prob):
    photo = np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)
    spacing = (height / grid.shape[0], width / grid.shape[1])
    heat = upsample(grid, height, width, spacing)
    pictures.append(overlay(photo, heat, 0.0, float(max(grid.max(), 1e-6)), alpha))
  return np.stack(pictures) if pictures else np.zeros([0, height, width, 3], np.uint8)


# ------------------------------------------------------------------ the picture


@dataclasses.dataclass(frozen=True)
class AttentionPicture:
  """What was drawn, for callers and tests: the PNG's size and where the photo lies in it."""

  path: str
  title: str
  colorbar_label: str
  vmin: float
  vmax: float
  num_keypoints: int
  size: tuple[int, int]  # (width, height) px of the written file
  image_box: tuple[int, int, int, int]  # (left, top, right, bottom) px of the photo in it


def _display_size(height: int, width: int) -> tuple[int, int]:
  """Photo size on the figure in px: between 480 and 1200 px wide, at most 1000 px tall."""
  display_width = min(max(width, 480), 1200)
  display_height = display_width * height / width
  if display_height > 1000:
    display_width, display_height = display_width * 1000 / display_height, 1000
  return round(display_height), round(display_width)


def plot_attention(
  output_path: str,
  image: np.ndarray,
  heat: np.ndarray,
  keypoints: np.ndarray,
  title: str,
  vmin: float,
  vmax: float,
  score_threshold: float | None = None,
) -> AttentionPicture:
  """Writes the picture (PNG unless the extension says otherwise) atomically.

  Args:
    output_path: image file to write.
    image: uint8 RGB ``[H, W, 3]`` photo.
    heat: ``[H, W]`` attention per pixel (NaN: not drawn).
    keypoints: ``[K, 2]`` ``(y, x)`` pixel positions of the kept features.
    title: figure title.
    vmin, vmax: attention values at the two ends of the colour map.
    score_threshold: drawn as a line on the colour bar when inside ``[vmin, vmax]``.
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import cm, colors
  from matplotlib import pyplot as plt

  from delf import atomic_io

  dpi = 100
  height, width = image.shape[:2]
  display_height, display_width = _display_size(height, width)
  figsize = ((display_width + 170) / dpi, (display_height + 90) / dpi)
  fig = plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
  try:
    ax = fig.add_subplot()
    ax.imshow(overlay(image, heat, vmin, vmax), extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
    if len(keypoints):
      ring = 28 if len(keypoints) <= 200 else 14  # smaller rings when they crowd
      for colour, line in (("black", 2.4), ("white", 1.1)):
        ax.scatter(
          keypoints[:, 1], keypoints[:, 0], s=ring, facecolors="none", edgecolors=colour,
          linewidths=line, label="kept keypoints" if colour == "white" else None,
        )  # fmt: skip
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=11)
    mappable = cm.ScalarMappable(colors.Normalize(vmin, vmax), matplotlib.colormaps[COLORMAP])
    colorbar = fig.colorbar(mappable, ax=ax, fraction=0.05, pad=0.02)
    colorbar.set_label(COLORBAR_LABEL)
    if score_threshold is not None and vmin <= score_threshold <= vmax:
      colorbar.ax.axhline(score_threshold, color="white", linewidth=2)
      colorbar.ax.axhline(score_threshold, color="black", linewidth=1, linestyle="--")
      colorbar.ax.text(
        1.0, score_threshold, " threshold", transform=colorbar.ax.get_yaxis_transform(),
        va="center", ha="left", fontsize=8, clip_on=False,
      )  # fmt: skip
    fig.canvas.draw()
    box = ax.get_window_extent()
    fig_height = round(figsize[1] * dpi)
    image_box = (
      round(box.x0),
      fig_height - round(box.y1),
      round(box.x1),
      fig_height - round(box.y0),
    )
    extension = os.path.splitext(output_path)[1].lstrip(".").lower() or "png"
    with atomic_io.atomic_output(output_path, "wb") as f:
      fig.savefig(f, format=extension, dpi=dpi)
  finally:
    plt.close(fig)
  return AttentionPicture(
    path=output_path,
    title=title,
    colorbar_label=COLORBAR_LABEL,
    vmin=float(vmin),
    vmax=float(vmax),
    num_keypoints=len(keypoints),
    size=(round(figsize[0] * dpi), fig_height),
    image_box=image_box,
  )


# ------------------------------------------------------------------ the script


@dataclasses.dataclass(frozen=True)
class VisualizeAttentionConfig:
  """Settings of ``visualize_attention.py``: a DelfConfig and/or an exported model."""

  image_paths: tuple[str, ...] = ()
  list_images_path: str = ""
  output_dir: str = "attention_pictures"
  config_path: str = ""
  model_path: str = ""
  scales: tuple[float, ...] = ()
  score_threshold: float | None = None
  max_feature_num: int | None = None


def output_path_for(image_path: str, scale: float, output_dir: str) -> str:
  """``<output_dir>/<image basename>_attention_scale<scale>.png``."""
  base = os.path.splitext(os.path.basename(image_path))[0]
  return os.path.join(output_dir, f"{base}_attention_scale{scale:g}.png")


def _error(message: str) -> int:
  """Prints the first line of ``message`` (TensorFlow's errors run over many) as ``Error:``."""
  first_line = (message.strip().splitlines() or ["unknown error"])[0]
  print(f"Error: {first_line}", file=sys.stderr, flush=True)
  return 1


def _extraction_config(config: VisualizeAttentionConfig):
  """The DelfConfig to run: the file's (local features only, no PCA) or a plain one."""
  from delf.extraction import config_io
  from delf.protos import delf_config_pb2

  if config.config_path:
    delf_config = config_io.read_delf_config(config.config_path)
    if not delf_config.use_local_features:
      raise ValueError(f"{config.config_path}: use_local_features is false: no attention")
  else:
    delf_config = delf_config_pb2.DelfConfig(is_tf2_exported=True)
    delf_config.image_scales.append(1.0)
  if config.model_path:
    delf_config.model_path = config.model_path
  delf_config.use_global_features = False
  delf_config.delf_local_config.use_pca = False  # Descriptors are not drawn.
  if config.score_threshold is not None:
    delf_config.delf_local_config.score_threshold = config.score_threshold
  if config.max_feature_num is not None:
    delf_config.delf_local_config.max_feature_num = config.max_feature_num
  return delf_config


def _check_inputs(config: VisualizeAttentionConfig) -> str | None:
  """The first problem with the settings, in one line, or None."""
  if not config.config_path and not config.model_path:
    return "give --config_path (a DelfConfig .pbtxt) or --model_path (an exported local model)"
  if config.list_images_path and not os.path.isfile(config.list_images_path):
    return f"image list not found: {config.list_images_path}"
  if not config.image_paths and not config.list_images_path:
    return "no images: give --image_paths or --list_images_path"
  for scale in config.scales:
    if not (math.isfinite(scale) and scale > 0):
      return f"--scales must be positive, got {scale:g}"
  if config.max_feature_num is not None and config.max_feature_num < 0:
    return f"--max_feature_num must be >= 0, got {config.max_feature_num}"
  if config.config_path and not os.path.isfile(config.config_path):
    return f"config file not found: {config.config_path}"
  if config.model_path and not os.path.isdir(config.model_path):
    return f"model directory not found: {config.model_path}"
  for path in config.image_paths:
    if not os.path.isfile(path):
      return f"image not found: {path}"
  return None


def draw_image_attention(
  extractor, image_path: str, scales: list[float], output_dir: str
) -> list[AttentionPicture]:
  """Writes one attention picture per scale for one image (see the module doc)."""
  from delf.extraction.image_io import RgbLoader

  local_config = extractor.config.delf_local_config
  threshold = float(local_config.score_threshold)
  max_feature_num = int(local_config.max_feature_num)
  image = np.array(RgbLoader(image_path))
  resized, factors = extractor.prepare(image)
  height, width = image.shape[:2]
  name = os.path.basename(image_path)
  pictures = []
  for scale in scales:
    boxes, scores = extractor.local_cells(resized, [scale], -np.inf, ALL_CELLS)
    grid, stride = attention_grid(boxes, scores, scale)
    missing = int(np.isnan(grid).sum())
    if missing:
      print(
        f"Warning: {image_path}: {missing} of {grid.size} cells at scale {scale:g} did not come "
        "back (an export with --iou < 1 suppresses cells); they are left uncoloured",
        file=sys.stderr,
      )
    spacing = (stride / (scale * factors[0]), stride / (scale * factors[1]))
    heat = upsample(grid, height, width, spacing)
    kept_boxes, _ = extractor.local_cells(resized, [scale], threshold, max_feature_num)
    keypoints = cell_centres(kept_boxes) / np.asarray(factors)[None, :]
    vmin, vmax = float(np.nanmin(grid)), float(np.nanmax(grid))
    title = (
      f"{name}: attention at scale {scale:g} ({grid.shape[0]}x{grid.shape[1]} cells)\n"
      f"{len(keypoints)} keypoints kept (attention >= {threshold:g}, at most {max_feature_num})"
    )
    output_path = output_path_for(image_path, scale, output_dir)
    picture = plot_attention(output_path, image, heat, keypoints, title, vmin, vmax, threshold)
    print(
      f"Wrote {output_path}: {len(keypoints)} keypoints kept, attention "
      f"{vmin:.3g} to {vmax:.3g} (threshold {threshold:g})",
      flush=True,
    )
    pictures.append(picture)
  return pictures


def visualize_attention(config: VisualizeAttentionConfig) -> int:
  """Draws the attention pictures of every image at every scale.

  Returns:
    0 when every picture was written, 1 otherwise (one ``Error:`` line per problem).
  """
  problem = _check_inputs(config)
  if problem:
    return _error(problem)
  if config.list_images_path:
    with open(config.list_images_path, encoding="utf-8") as f:
      listed = [line.rstrip() for line in f if line.strip()]
    if not listed:
      return _error(f"no image paths in {config.list_images_path}")
    config = dataclasses.replace(config, image_paths=(*config.image_paths, *listed))
    problem = _check_inputs(config)
    if problem:
      return _error(problem)
  try:
    delf_config = _extraction_config(config)
  except (OSError, ValueError) as e:
    return _error(str(e))
  scales = list(config.scales) or list(delf_config.image_scales)
  from delf.extraction import extractor as extractor_lib

  try:
    extractor = extractor_lib.MakeExtractor(delf_config)
  except (OSError, ValueError) as e:
    return _error(str(e))
  os.makedirs(config.output_dir, exist_ok=True)
  failures = 0
  for image_path in config.image_paths:
    try:
      draw_image_attention(extractor, image_path, scales, config.output_dir)
    except Exception as e:  # One line per image, then the next image.
      failures += 1
      _error(f"{image_path}: {e or type(e).__name__}")
  if failures:
    return _error(f"{failures} of {len(config.image_paths)} images failed")
  return 0
