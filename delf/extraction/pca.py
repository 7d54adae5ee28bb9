"""PCA / whitening of descriptors (inference.md §2.5) and loading its parameter files.

``Y = (X - mean) @ P[:k].T`` with the rows of ``P`` the principal components,
then, with whitening, ``Y / sqrt(variances[:k])``. The parameter files are
DatumProto files (``mean.datum`` [D], ``pca_proj_mat.datum`` [D, D], variances
[D]); extra unit dimensions are squeezed as in the reference.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from delf import datum_io
from delf.protos import delf_config_pb2


@dataclasses.dataclass(frozen=True)
class PcaParameters:
  """PCA parameters as float32 arrays (the reference passes them as a dict)."""

  mean: np.ndarray
  matrix: np.ndarray
  dim: int
  use_whitening: bool = False
  variances: np.ndarray | None = None


def ApplyPcaAndWhitening(data: np.ndarray, pca: PcaParameters) -> np.ndarray:
  """Projects [N, D] data onto the first ``pca.dim`` components (+ whitening) -> [N, dim]."""
  data = np.asarray(data, dtype=np.float32)
  if data.ndim != 2 or data.shape[1] != pca.mean.shape[0]:
    raise ValueError(
      f"descriptors of shape {data.shape} do not fit the PCA parameters of dimension "
      f"{pca.mean.shape[0]} (is the config's PCA meant for this model?)"
    )
  output = (data - pca.mean.astype(np.float32)) @ pca.matrix[: pca.dim, :].astype(np.float32).T
  if pca.use_whitening:
    if pca.variances is None:
      raise ValueError("use_whitening is set but no PCA variances were given")
    output = output / np.sqrt(pca.variances[: pca.dim].astype(np.float32))
  return output.astype(np.float32)


def _read_datum(path: str, what: str) -> np.ndarray:
  if not path:
    raise ValueError(f"PCA {what} path is empty in the config")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PCA {what} file not found: {path}")
  try:
    return datum_io.ReadFromFile(path).astype(np.float32)
  except Exception as e:
    raise ValueError(f"cannot read PCA {what} file {path}: {e}") from e


def load_pca_parameters(params: delf_config_pb2.DelfPcaParameters) -> PcaParameters:
  """Reads the PCA files named in a ``DelfPcaParameters`` message."""
  mean = _read_datum(params.mean_path, "mean").reshape(-1)
  matrix = _read_datum(params.projection_matrix_path, "projection matrix")
  matrix = np.squeeze(matrix) if matrix.ndim > 2 else matrix
  if matrix.ndim != 2 or matrix.shape[1] != mean.shape[0]:
    raise ValueError(
      f"PCA projection matrix {params.projection_matrix_path} has shape {matrix.shape}; "
      f"expected [k, {mean.shape[0]}] to match the mean {params.mean_path}"
    )
  if not 0 < params.pca_dim <= matrix.shape[0]:
    raise ValueError(f"pca_dim {params.pca_dim} must be in [1, {matrix.shape[0]}]")
  variances = None
  if params.use_whitening:
    variances = np.squeeze(_read_datum(params.pca_variances_path, "variances"))
    if variances.ndim != 1 or variances.shape[0] < params.pca_dim:
      raise ValueError(
        f"PCA variances {params.pca_variances_path} have shape {variances.shape}; "
        f"expected [>= {params.pca_dim}]"
      )
  return PcaParameters(
    mean=mean,
    matrix=matrix,
    dim=int(params.pca_dim),
    use_whitening=bool(params.use_whitening),
    variances=variances,
  )
