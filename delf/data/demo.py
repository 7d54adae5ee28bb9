"""A small, offline, deterministic GLDv2-layout dataset made of real photographs.

Training, retrieval and the tests need data that looks like GLDv2 (same folders,
same CSVs, 16-hex-character ids, non-contiguous landmark ids, noisy images left
out of ``train_clean.csv``) but is generated in seconds without a download. Each
landmark is a real photo (or a distinct region of one) shipped with scikit-image;
each image of it is a new "visit": a random perspective warp, scale, rotation and
crop, pasted on an unrelated photo, with illumination and colour changes, blur,
noise and occluders. Local features therefore have true correspondences, and the
homography of every view is known.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import os
import pathlib

import numpy as np
from PIL import Image
from scipy import ndimage

from delf import atomic_io
from delf.data import view_homographies

SPLITS = ("train", "index", "test")


def image_path(root: str | os.PathLike, split: str, image_id: str) -> pathlib.Path:
  """Where GLDv2 keeps an image: ``<root>/<split>/<c0>/<c1>/<c2>/<id>.jpg``."""
  return pathlib.Path(root, split, image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")


def _rgb(image: np.ndarray) -> np.ndarray:
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  return np.ascontiguousarray(image[..., :3].astype(np.uint8))


@functools.lru_cache(maxsize=1)
def _source_photos() -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
  """(landmark photos, background-only textures), all uint8 RGB, from skimage.data."""
  from skimage import data  # Local import: only demo generation needs scikit-image.

  hubble = data.hubble_deep_field()
  rocket = data.rocket()
  motorcycle = data.stereo_motorcycle()[0]
  retina = data.retina()
  landmarks = [
    data.astronaut(),
    data.chelsea(),
    data.coffee(),
    rocket[:, :360],
    motorcycle,
    hubble[:436, :500],
    data.immunohistochemistry(),
    data.camera(),
    data.coins(),
    data.clock(),
    hubble[436:, 500:],
    retina[300:1100, 300:1100],
    data.moon(),
    rocket[:, 320:],
    data.page(),
    data.text(),
  ]
  textures = [data.brick(), data.grass(), data.gravel()]
  landmarks = tuple(_rgb(im) for im in landmarks)
  textures = tuple(_rgb(im) for im in textures)
  for im in landmarks + textures:
    im.setflags(write=False)
  return landmarks, textures


def landmark_source_images() -> list[np.ndarray]:
  """The distinct real photos (or regions of them) that serve as demo landmarks.

  Returns read-only uint8 ``[H, W, 3]`` arrays (grayscale photos replicated to
  three channels), in a fixed order; the first ones are the most textured.
  """
  return list(_source_photos()[0])


def _background_pool() -> tuple[np.ndarray, ...]:
  landmarks, textures = _source_photos()
  return textures + landmarks


def _landmark_image(k: int) -> np.ndarray:
  """Landmark ``k``: a source photo, or beyond the list a mirrored, recoloured region."""
  sources = landmark_source_images()
  if k < len(sources):
    return sources[k]
  rng = np.random.default_rng(1_000_003 + k)
  base = sources[k % len(sources)]
  h, w = base.shape[:2]
  ch, cw = int(h * rng.uniform(0.5, 0.75)), int(w * rng.uniform(0.5, 0.75))
  y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  region = base[y : y + ch, x : x + cw][:, ::-1]
  perm = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)][(k // len(sources)) % 5]
  return np.ascontiguousarray(region[..., perm])


def _resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((size_hw[1], size_hw[0]), Image.BILINEAR))


def _random_patch(
  rng: np.random.Generator, exclude: np.ndarray | None, size_hw: tuple[int, int]
) -> np.ndarray:
  """A random crop of a photo other than ``exclude``, resized to ``size_hw``."""
  pool = [p for p in _background_pool() if exclude is None or not _same_photo(p, exclude)]
  photo = pool[rng.integers(len(pool))]
  h, w = photo.shape[:2]
  frac = rng.uniform(0.3, 0.9)
  ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
  y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  patch = photo[y : y + ch, x : x + cw]
  if rng.random() < 0.5:
    patch = patch[:, ::-1]
  return _resize(np.ascontiguousarray(patch), size_hw)


def _same_photo(a: np.ndarray, b: np.ndarray) -> bool:
  if a is b:
    return True
  if a.shape != b.shape:
    return False
  return bool(np.array_equal(a[::17, ::13], b[::17, ::13]))


def _view_homography(
  landmark_hw: tuple[int, int],
  output_hw: tuple[int, int],
  rng: np.random.Generator,
  difficulty: float,
) -> np.ndarray:
  """Landmark pixel (x, y, 1) -> view pixel: perspective, scale, rotation, translation."""
  lh, lw = landmark_hw
  oh, ow = output_hw
  radius = max(lh, lw) / 2.0
  normalise = np.array(
    [[1 / radius, 0, -(lw - 1) / 2 / radius], [0, 1 / radius, -(lh - 1) / 2 / radius], [0, 0, 1]]
  )
  p1, p2 = rng.uniform(-0.25, 0.25, size=2) * difficulty
  perspective = np.array([[1.0, 0, 0], [0, 1.0, 0], [p1, p2, 1.0]])
  fill = rng.uniform(0.65, 0.95)
  scale = fill * min(ow / lw, oh / lh) * radius * np.exp(rng.uniform(-0.3, 0.3) * difficulty)
  angle = np.deg2rad(rng.uniform(-20, 20) * difficulty)
  cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
  tx = (ow - 1) / 2 + rng.uniform(-0.15, 0.15) * ow * difficulty
  ty = (oh - 1) / 2 + rng.uniform(-0.15, 0.15) * oh * difficulty
  place = np.array([[cos, -sin, tx], [sin, cos, ty], [0, 0, 1.0]])
  homography = place @ perspective @ normalise
  return homography / homography[2, 2]


def render_landmark_view(
  landmark_image: np.ndarray,
  rng: np.random.Generator,
  output_size: tuple[int, int],
  difficulty: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Renders one photo of a landmark as a visitor might take it.

  Args:
    landmark_image: uint8 ``[H, W, 3]`` (or ``[H, W]``) picture of the landmark.
    rng: source of all randomness (same state -> same view).
    output_size: ``(height, width)`` of the view.
    difficulty: 0 gives a nearly frontal, clean view; 1 the default amount of
      viewpoint change, photometric change, blur, noise and occlusion.

  Returns:
    ``(view, homography)``: the uint8 ``[h, w, 3]`` view, and the 3x3 matrix
    mapping landmark-image pixel coordinates ``(x, y, 1)`` to view coordinates
    (before the photometric changes and occluders, which do not move pixels).
  """
  landmark = _rgb(np.asarray(landmark_image))
  oh, ow = int(output_size[0]), int(output_size[1])
  difficulty = float(max(0.0, difficulty))
  homography = _view_homography(landmark.shape[:2], (oh, ow), rng, difficulty)

  ys, xs = np.mgrid[0:oh, 0:ow].astype(np.float64)
  source = np.linalg.inv(homography) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
  sx, sy = source[0] / source[2], source[1] / source[2]
  lh, lw = landmark.shape[:2]
  inside = ((sx >= 0) & (sx <= lw - 1) & (sy >= 0) & (sy <= lh - 1)).reshape(oh, ow)
  warped = np.stack(
    [
      ndimage.map_coordinates(landmark[..., c], [sy, sx], order=1, mode="nearest") for c in range(3)
    ],
    axis=-1,
  ).reshape(oh, ow, 3)
  view = _random_patch(rng, landmark, (oh, ow)).astype(np.float32)
  view[inside] = warped[inside]

  # Illumination and colour: global gain, per-channel tint, gamma.
  gain = np.exp(rng.uniform(-0.35, 0.35) * difficulty)
  tint = np.exp(rng.uniform(-0.12, 0.12, size=3) * difficulty)
  gamma = np.exp(rng.uniform(-0.3, 0.3) * difficulty)
  view = 255.0 * np.clip(view * gain * tint / 255.0, 0, 1) ** gamma

  # Occluders: patches of other photos or flat colour.
  for _ in range(rng.integers(0, 3) if difficulty > 0 else 0):
    bh = int(oh * rng.uniform(0.08, 0.25) * difficulty) + 1
    bw = int(ow * rng.uniform(0.08, 0.25) * difficulty) + 1
    y0, x0 = rng.integers(0, oh - bh + 1), rng.integers(0, ow - bw + 1)
    if rng.random() < 0.5:
      view[y0 : y0 + bh, x0 : x0 + bw] = _random_patch(rng, landmark, (bh, bw))
    else:
      view[y0 : y0 + bh, x0 : x0 + bw] = rng.uniform(0, 255, size=3)

  if rng.random() < 0.5 * min(1.0, difficulty):
    view = ndimage.gaussian_filter(view, sigma=(rng.uniform(0.3, 1.2) * difficulty,) * 2 + (0,))
  noise = rng.uniform(0, 6) * difficulty
  if noise > 0:
    view = view + rng.normal(0, noise, size=view.shape)
  return np.clip(np.rint(view), 0, 255).astype(np.uint8), homography


def _unrelated_image(rng: np.random.Generator, size_hw: tuple[int, int]) -> np.ndarray:
  """A non-landmark photo: a crop of a texture or of a landmark photo's margin."""
  return _random_patch(rng, None, size_hw)


@dataclasses.dataclass(frozen=True)
class DemoDatasetInfo:
  """What ``make_demo_dataset`` wrote.

  Attributes:
    root: the output directory.
    landmark_ids: landmark id of each landmark, in landmark order (non-contiguous).
    train_ids: ids in ``train.csv`` order (clean + noisy, not the missing planted id).
    train_clean_ids: ids listed in ``train_clean.csv`` (incl. planted bad files).
    noisy_ids: train images left out of ``train_clean.csv`` (wrong content).
    index_ids / test_ids: ids of the index / test images.
    labels: image id -> landmark id of its content (None for non-landmark images).
    bad_files: planted bad file id -> kind (``truncated``, ``grayscale``, ``png``,
      ``missing``); ``grayscale`` is valid input and must not be skipped.
    views: image id -> where it shows its landmark (homography from the landmark's
      source photo), for every readable landmark view of every split; also written
      to ``<root>/view_homographies.json``.
  """

  root: pathlib.Path
  landmark_ids: list[int]
  train_ids: list[str]
  train_clean_ids: list[str]
  noisy_ids: list[str]
  index_ids: list[str]
  test_ids: list[str]
  labels: dict[str, int | None]
  bad_files: dict[str, str]
  views: dict[str, view_homographies.ViewGeometry] = dataclasses.field(default_factory=dict)

  def path(self, split: str, image_id: str) -> pathlib.Path:
    return image_path(self.root, split, image_id)


def _encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def _write_csv(path: pathlib.Path, header: list[str], rows: list[list]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  atomic_io.write_text_atomic(path, buffer.getvalue())


def _write_image(root: pathlib.Path, split: str, image_id: str, data: bytes) -> None:
  path = image_path(root, split, image_id)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def make_demo_dataset(
  output_dir: str | os.PathLike,
  *,
  seed: int = 0,
  num_landmarks: int = 8,
  images_per_landmark: int = 8,
  image_size: tuple[int, int] = (192, 256),
  index_images_per_landmark: int = 2,
  test_images_per_landmark: int = 1,
  num_noisy: int | None = None,
  num_distractors: int = 2,
  difficulty: float = 1.0,
  plant_bad_files: bool = False,
) -> DemoDatasetInfo:
  """Writes a GLDv2-layout demo dataset under ``output_dir`` (deterministic for ``seed``).

  Args:
    output_dir: root; ``train/``, ``index/``, ``test/`` are created inside.
    seed: everything (ids, landmark ids, views) follows from it.
    num_landmarks: number of landmarks (classes).
    images_per_landmark: clean train images per landmark.
    image_size: ``(height, width)`` of every image.
    index_images_per_landmark: index (database) images per landmark.
    test_images_per_landmark: test (query) images per landmark.
    num_noisy: train images with wrong content, listed only in ``train.csv``
      (default ``max(1, num_landmarks // 2)``).
    num_distractors: non-landmark images in each of index and test.
    difficulty: viewpoint/photometric change, see ``render_landmark_view``.
    plant_bad_files: also list in ``train_clean.csv`` a truncated JPEG, a
      grayscale JPEG, a PNG named ``.jpg`` and an id without a file.

  Every landmark view's homography (landmark source photo -> image file pixels) is
  recorded in ``<root>/view_homographies.json`` (``delf.data.view_homographies``).

  Returns:
    A ``DemoDatasetInfo`` describing what was written.
  """
  if num_landmarks < 1 or images_per_landmark < 1:
    raise ValueError("num_landmarks and images_per_landmark must be >= 1")
  root = pathlib.Path(output_dir)
  rng = np.random.default_rng(seed)
  size = (int(image_size[0]), int(image_size[1]))
  num_noisy = max(1, num_landmarks // 2) if num_noisy is None else num_noisy

  landmark_ids = sorted(int(v) for v in rng.choice(np.arange(1, 200_000), num_landmarks, False))
  landmark_ids = [int(v) for v in rng.permutation(landmark_ids)]
  used: set[str] = set()

  def new_id() -> str:
    while True:
      image_id = rng.bytes(8).hex()
      if image_id not in used:
        used.add(image_id)
        return image_id

  labels: dict[str, int | None] = {}
  views: dict[str, view_homographies.ViewGeometry] = {}

  def view_of(k: int, split: str | None = None, image_id: str | None = None) -> bytes:
    """A JPEG view of landmark k; its homography is recorded under ``image_id`` if given."""
    view, homography = render_landmark_view(_landmark_image(k), rng, size, difficulty)
    if image_id is not None:
      # The JPEG keeps the rendered size, so the homography holds for the file's pixels.
      views[image_id] = view_homographies.ViewGeometry(split, landmark_ids[k], homography)
    return _encode_jpeg(view)

  # Train: clean images per landmark, then noisy ones (wrong content) in train.csv only.
  clean_by_landmark: list[list[str]] = []
  for k, landmark_id in enumerate(landmark_ids):
    ids = []
    for _ in range(images_per_landmark):
      image_id = new_id()
      _write_image(root, "train", image_id, view_of(k, "train", image_id))
      labels[image_id] = landmark_id
      ids.append(image_id)
    clean_by_landmark.append(ids)
  noisy_ids, noisy_labels = [], []
  for j in range(num_noisy):
    image_id = new_id()
    k = int(rng.integers(num_landmarks))
    if j % 2 == 0 or num_landmarks == 1:
      data, content = _encode_jpeg(_unrelated_image(rng, size)), None
    else:
      other = (k + 1 + int(rng.integers(num_landmarks - 1))) % num_landmarks
      data, content = view_of(other, "train", image_id), landmark_ids[other]
    _write_image(root, "train", image_id, data)
    labels[image_id] = content
    noisy_ids.append(image_id)
    noisy_labels.append(landmark_ids[k])

  bad_files: dict[str, str] = {}
  if plant_bad_files:
    planted = {kind: new_id() for kind in ("truncated", "grayscale", "png", "missing")}
    good = view_of(0)
    _write_image(root, "train", planted["truncated"], good[: len(good) // 2])
    gray = np.asarray(Image.fromarray(_landmark_image(1)).convert("L").resize(size[::-1]))
    buffer = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buffer, format="JPEG", quality=90)
    _write_image(root, "train", planted["grayscale"], buffer.getvalue())
    buffer = io.BytesIO()
    Image.fromarray(_unrelated_image(rng, size)).save(buffer, format="PNG")
    _write_image(root, "train", planted["png"], buffer.getvalue())
    for kind, image_id in planted.items():
      k = min(1, num_landmarks - 1) if kind == "grayscale" else 0
      bad_files[image_id] = kind
      labels[image_id] = landmark_ids[k]
      clean_by_landmark[k].append(image_id)

  train_rows = []
  for k, ids in enumerate(clean_by_landmark):
    train_rows += [[i, f"https://example.invalid/demo/{i}.jpg", landmark_ids[k]] for i in ids]
  train_rows += [
    [i, f"https://example.invalid/demo/{i}.jpg", lab] for i, lab in zip(noisy_ids, noisy_labels)
  ]
  present_rows = [r for r in train_rows if bad_files.get(r[0]) != "missing"]
  order = rng.permutation(len(present_rows))
  train_rows = [present_rows[i] for i in order]
  train_dir = root / "train"
  _write_csv(train_dir / "train.csv", ["id", "url", "landmark_id"], train_rows)
  _write_csv(
    train_dir / "train_clean.csv",
    ["landmark_id", "images"],
    [[landmark_ids[k], " ".join(ids)] for k, ids in enumerate(clean_by_landmark)],
  )
  category = "http://commons.wikimedia.org/wiki/Category:Demo_landmark_{}"
  categories = [[lid, category.format(lid)] for lid in sorted(landmark_ids)]
  _write_csv(train_dir / "train_label_to_category.csv", ["landmark_id", "category"], categories)

  # Index: views of every landmark plus non-landmark distractors.
  index_rows, index_by_landmark = [], {lid: [] for lid in landmark_ids}
  index_ids = []
  for k, landmark_id in enumerate(landmark_ids):
    for _ in range(index_images_per_landmark):
      image_id = new_id()
      _write_image(root, "index", image_id, view_of(k, "index", image_id))
      labels[image_id] = landmark_id
      index_rows.append([image_id, landmark_id])
      index_by_landmark[landmark_id].append(image_id)
      index_ids.append(image_id)
  for _ in range(num_distractors):
    image_id = new_id()
    _write_image(root, "index", image_id, _encode_jpeg(_unrelated_image(rng, size)))
    labels[image_id] = None
    index_ids.append(image_id)
  index_dir = root / "index"
  _write_csv(index_dir / "index.csv", ["id"], [[i] for i in index_ids])
  _write_csv(index_dir / "index_image_to_landmark.csv", ["id", "landmark_id"], index_rows)
  _write_csv(index_dir / "index_label_to_category.csv", ["landmark_id", "category"], categories)

  # Test: queries of every landmark plus non-landmark images, with GLDv2 solutions.
  test_ids, recognition, retrieval = [], [], []
  for k, landmark_id in enumerate(landmark_ids):
    for _ in range(test_images_per_landmark):
      image_id = new_id()
      _write_image(root, "test", image_id, view_of(k, "test", image_id))
      labels[image_id] = landmark_id
      test_ids.append(image_id)
  for _ in range(num_distractors):
    image_id = new_id()
    _write_image(root, "test", image_id, _encode_jpeg(_unrelated_image(rng, size)))
    labels[image_id] = None
    test_ids.append(image_id)
  for n, image_id in enumerate(test_ids):
    usage = "Public" if n % 2 == 0 else "Private"
    landmark_id = labels[image_id]
    if landmark_id is None:
      recognition.append([image_id, "", usage])
      retrieval.append([image_id, "None", "Ignored"])
    else:
      recognition.append([image_id, str(landmark_id), usage])
      retrieval.append([image_id, " ".join(index_by_landmark[landmark_id]), usage])
  test_dir = root / "test"
  _write_csv(test_dir / "test.csv", ["id"], [[i] for i in test_ids])
  truth = test_dir / "ground_truth"
  _write_csv(truth / "recognition_solution_v2.1.csv", ["id", "landmarks", "Usage"], recognition)
  _write_csv(truth / "retrieval_solution_v2.1.csv", ["id", "images", "Usage"], retrieval)
  view_homographies.write_view_homographies(root, views)

  return DemoDatasetInfo(
    root=root,
    landmark_ids=landmark_ids,
    train_ids=[r[0] for r in train_rows],
    train_clean_ids=[i for ids in clean_by_landmark for i in ids],
    noisy_ids=noisy_ids,
    index_ids=index_ids,
    test_ids=test_ids,
    labels=labels,
    bad_files=bad_files,
    views=views,
  )
