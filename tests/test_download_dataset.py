"""download_dataset.sh against a local HTTP server: layout, MD5 retries (KB-1), re-runs."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pathlib
import shutil
import subprocess
import tarfile
import threading

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "download_dataset.sh"
pytestmark = pytest.mark.skipif(
  shutil.which("bash") is None or not (shutil.which("curl") or shutil.which("wget")),
  reason="needs bash and curl or wget",
)

CSVS = {
  "metadata/train.csv": "id,url,landmark_id\n",
  "metadata/train_clean.csv": "landmark_id,images\n",
  "metadata/train_attribution.csv": "id,url,author\n",
  "metadata/train_label_to_category.csv": "landmark_id,category\n",
  "metadata/index.csv": "id\n",
  "metadata/index_image_to_landmark.csv": "id,landmark_id\n",
  "metadata/index_label_to_category.csv": "landmark_id,category\n",
  "metadata/test.csv": "id\n",
  "ground_truth/recognition_solution_v2.1.csv": "id,landmarks,Usage\n",
  "ground_truth/retrieval_solution_v2.1.csv": "id,images,Usage\n",
}


def _tar_with_images(ids: list[str]) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w") as tar:
    for image_id in ids:
      data = f"jpeg-{image_id}".encode()
      info = tarfile.TarInfo(f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


class _Handler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, format, *args):
    self.server.requests.append(self.path)  # type: ignore[attr-defined]


@pytest.fixture
def server(tmp_path):
  root = tmp_path / "www"
  for rel, text in CSVS.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  tars = {
    ("train", 0): ["abc0000000000001", "abd0000000000002"],
    ("train", 1): ["f000000000000003"],
    ("index", 0): ["1230000000000004"],
    ("test", 0): ["9990000000000005"],
  }
  for (split, index), ids in tars.items():
    data = _tar_with_images(ids)
    (root / split).mkdir(exist_ok=True)
    (root / split / f"images_{index:03d}.tar").write_bytes(data)
    md5_dir = root / "md5sum" / split
    md5_dir.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5(data).hexdigest()
    (md5_dir / f"md5.images_{index:03d}.txt").write_text(f"{md5}  images_{index:03d}.tar\n")
  handler = functools.partial(_Handler, directory=str(root))
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  httpd.requests = []  # type: ignore[attr-defined]
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield root, httpd
  httpd.shutdown()
  httpd.server_close()


def _run(cwd: pathlib.Path, httpd, *counts: str):
  env = dict(
    os.environ,
    GLDV2_BASE_URL=f"http://127.0.0.1:{httpd.server_address[1]}/",
    GLDV2_RETRY_DELAY="0",
  )
  return subprocess.run(
    ["bash", str(SCRIPT), *counts],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_downloads_verifies_and_extracts(server, tmp_path):
  _, httpd = server
  work = tmp_path / "work"
  work.mkdir()
  result = _run(work, httpd, "2", "1", "1")
  assert result.returncode == 0, result.stderr
  data = work / "gldv2_dataset"
  for rel in CSVS:
    split = {"train": "train", "index": "index", "test": "test"}[
      "train" if "train" in rel else "index" if "index" in rel else "test"
    ]
    name = rel.split("/", 1)[1] if rel.startswith("metadata/") else rel
    assert (data / split / name).read_text() == CSVS[rel], rel
  assert (data / "train/a/b/c/abc0000000000001.jpg").read_bytes() == b"jpeg-abc0000000000001"
  assert (data / "train/f/0/0/f000000000000003.jpg").is_file()
  assert (data / "index/1/2/3/1230000000000004.jpg").is_file()
  assert (data / "test/9/9/9/9990000000000005.jpg").is_file()
  # Splits in the order train, test, index.
  tar_requests = [p for p in httpd.requests if p.endswith(".tar")]
  assert [p.split("/")[1] for p in tar_requests] == ["train", "train", "test", "index"]

  # A re-run downloads nothing again.
  httpd.requests.clear()
  result = _run(work, httpd, "2", "1", "1")
  assert result.returncode == 0, result.stderr
  assert httpd.requests == []
  assert "Already verified and extracted: train/images_000.tar" in result.stdout


def test_md5_mismatch_is_retried_not_extracted_and_reported(server, tmp_path):
  root, httpd = server
  (root / "md5sum/train/md5.images_001.txt").write_text("0" * 32 + "  images_001.tar\n")
  (root / "metadata/index.csv").unlink()  # a CSV that cannot be downloaded
  work = tmp_path / "work"
  work.mkdir()
  result = _run(work, httpd, "2", "1", "0")
  assert result.returncode == 1
  assert "train/images_001.tar: MD5 mismatch" in result.stderr
  assert "index/index.csv: download failed" in result.stderr
  assert httpd.requests.count("/train/images_001.tar") == 3  # GLDV2_RETRIES attempts
  data = work / "gldv2_dataset"
  assert not (data / "train/f").exists()  # never unpacked
  assert not (data / "train/images_001.tar").exists()
  assert (data / "train/a/b/c/abc0000000000001.jpg").is_file()  # the good tar was

  # Fix the server; a re-run fetches only what failed and then succeeds.
  data_001 = (root / "train/images_001.tar").read_bytes()
  md5 = hashlib.md5(data_001).hexdigest()
  (root / "md5sum/train/md5.images_001.txt").write_text(f"{md5}  images_001.tar\n")
  (root / "metadata/index.csv").write_text(CSVS["metadata/index.csv"])
  httpd.requests.clear()
  result = _run(work, httpd, "2", "1", "0")
  assert result.returncode == 0, result.stderr
  assert sorted(p for p in httpd.requests if p.endswith((".tar", ".csv"))) == [
    "/metadata/index.csv",
    "/train/images_001.tar",
  ]
  assert (data / "train/f/0/0/f000000000000003.jpg").is_file()


@pytest.mark.parametrize("counts", [("501", "0", "0"), ("1", "101", "0"), ("1", "1", "x"), ("1",)])
def test_bad_arguments(counts, tmp_path):
  result = subprocess.run(
    ["bash", str(SCRIPT), *counts], cwd=tmp_path, capture_output=True, text=True, timeout=30
  )
  assert result.returncode == 2
  assert "Usage:" in result.stderr
  assert not (tmp_path / "gldv2_dataset").exists()


def _closed_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]  # nobody listens there once closed: connections are refused


def test_unreachable_host_fails_fast_with_one_clear_error(tmp_path):
  """Issue 8 (10): one probe of the base URL instead of 3 attempts x 5 s for every file."""
  import time

  url = f"http://127.0.0.1:{_closed_port()}/"
  env = dict(os.environ, GLDV2_BASE_URL=url)  # the default 5 s retry delay stays
  start = time.monotonic()
  result = subprocess.run(
    ["bash", str(SCRIPT), "1", "1", "1"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert time.monotonic() - start < 10
  assert result.returncode == 1
  assert result.stderr.startswith(f"error: cannot reach {url}")
  assert "GLDV2_BASE_URL" in result.stderr
  assert "FAILED" not in result.stderr  # no per-file retries happened
  assert not [p for p in (tmp_path / "gldv2_dataset").rglob("*") if p.is_file()]


def test_complete_download_needs_no_network(server, tmp_path):
  _, httpd = server
  work = tmp_path / "work"
  work.mkdir()
  assert _run(work, httpd, "1", "1", "1").returncode == 0
  env = dict(os.environ, GLDV2_BASE_URL=f"http://127.0.0.1:{_closed_port()}/")
  result = subprocess.run(
    ["bash", str(SCRIPT), "1", "1", "1"], cwd=work, env=env, capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr
  assert "All requested GLDv2 files are downloaded" in result.stdout
