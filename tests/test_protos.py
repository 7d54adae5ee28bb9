"""Protos: committed generated code in sync with protos/, and the spec's fields and defaults."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from google.protobuf import descriptor as descriptor_lib
from google.protobuf import text_format

import delf
from delf.protos import generate

FieldDescriptor = descriptor_lib.FieldDescriptor


def test_generated_modules_match_the_proto_sources(tmp_path):
  pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) regenerates the protos")
  for path in generate.generate(tmp_path):
    committed = generate.PACKAGE_DIR / path.name
    ours, fresh = committed.read_text(), path.read_text()
    if generate.gencode_version(fresh) == generate.GENCODE_VERSION:
      # The generator of the committed code (make test-protobuf-oldest): byte for byte.
      assert ours == fresh, f"{committed} is stale: run `make protos`"
    else:  # Another grpcio-tools: the same code up to its version stamp.
      assert generate.without_version(ours) == generate.without_version(fresh), (
        f"{committed} is stale: run `make protos`"
      )


def test_gencode_is_stamped_with_the_oldest_supported_protobuf():
  """Generated code runs on runtimes of its major version not older than its stamp."""
  import re

  from google import protobuf

  pyproject = (generate.REPO_ROOT / "pyproject.toml").read_text()
  pin = re.search(r'"protobuf>=([0-9.]+),<([0-9]+)"', pyproject)
  assert pin, "pyproject.toml must pin protobuf>=X,<Y"
  assert pin.group(1) == generate.GENCODE_VERSION
  for name in generate.PROTO_NAMES:
    text = (generate.PACKAGE_DIR / f"{name}_pb2.py").read_text()
    assert generate.gencode_version(text) == generate.GENCODE_VERSION, name
  runtime = tuple(int(p) for p in protobuf.__version__.split(".")[:3])
  oldest = tuple(int(p) for p in generate.GENCODE_VERSION.split("."))
  assert oldest <= runtime < (int(pin.group(2)), 0, 0)
  import delf.protos.feature_pb2  # noqa: F401 - loads on this runtime


def test_flat_aliases_like_the_reference():
  from delf import box_pb2, datum_pb2, delf_config_pb2, feature_pb2
  from delf.protos import datum_pb2 as nested_datum_pb2

  assert datum_pb2 is nested_datum_pb2
  assert delf.feature_pb2 is feature_pb2
  for module, name in [
    (datum_pb2, "datum"),
    (feature_pb2, "feature"),
    (box_pb2, "box"),
    (delf_config_pb2, "delf_config"),
  ]:
    assert module.DESCRIPTOR.name == f"delf/protos/{name}.proto"
    assert module.DESCRIPTOR.package == "delf.protos"


def test_import_delf_does_not_import_tensorflow():
  code = "import sys, delf, delf.feature_io; sys.exit('tensorflow' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _fields(message):
  return {f.name: f for f in message.DESCRIPTOR.fields}


# (message, field, number, type, label, default or None) from inference.md §1.
_REPEATED = "repeated"
_OPTIONAL = "optional"
SPEC_FIELDS = [
  ("datum_pb2.DatumShape", "dim", 1, FieldDescriptor.TYPE_INT64, _REPEATED, None),
  ("datum_pb2.FloatList", "value", 1, FieldDescriptor.TYPE_FLOAT, _REPEATED, None),
  ("datum_pb2.Uint32List", "value", 1, FieldDescriptor.TYPE_UINT32, _REPEATED, None),
  ("datum_pb2.DatumProto", "shape", 1, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("datum_pb2.DatumProto", "float_list", 2, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("datum_pb2.DatumProto", "uint32_list", 3, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("datum_pb2.DatumPairProto", "first", 1, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("datum_pb2.DatumPairProto", "second", 2, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("feature_pb2.DelfFeature", "descriptor", 1, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("feature_pb2.DelfFeature", "x", 2, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("feature_pb2.DelfFeature", "y", 3, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("feature_pb2.DelfFeature", "scale", 4, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("feature_pb2.DelfFeature", "orientation", 5, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("feature_pb2.DelfFeature", "strength", 6, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("feature_pb2.DelfFeatures", "feature", 1, FieldDescriptor.TYPE_MESSAGE, _REPEATED, None),
  ("box_pb2.Box", "ymin", 1, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("box_pb2.Box", "xmin", 2, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("box_pb2.Box", "ymax", 3, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("box_pb2.Box", "xmax", 4, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("box_pb2.Box", "score", 5, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, None),
  ("box_pb2.Box", "class_index", 6, FieldDescriptor.TYPE_INT32, _OPTIONAL, None),
  ("box_pb2.Boxes", "box", 1, FieldDescriptor.TYPE_MESSAGE, _REPEATED, None),
  ("delf_config_pb2.DelfPcaParameters", "mean_path", 1, FieldDescriptor.TYPE_STRING, _OPTIONAL, None),
  ("delf_config_pb2.DelfPcaParameters", "projection_matrix_path", 2, FieldDescriptor.TYPE_STRING, _OPTIONAL, None),
  ("delf_config_pb2.DelfPcaParameters", "pca_dim", 3, FieldDescriptor.TYPE_INT32, _OPTIONAL, None),
  ("delf_config_pb2.DelfPcaParameters", "use_whitening", 4, FieldDescriptor.TYPE_BOOL, _OPTIONAL, False),
  ("delf_config_pb2.DelfPcaParameters", "pca_variances_path", 5, FieldDescriptor.TYPE_STRING, _OPTIONAL, None),
  ("delf_config_pb2.DelfLocalFeatureConfig", "use_pca", 1, FieldDescriptor.TYPE_BOOL, _OPTIONAL, True),
  ("delf_config_pb2.DelfLocalFeatureConfig", "layer_name", 2, FieldDescriptor.TYPE_STRING, _OPTIONAL, ""),
  ("delf_config_pb2.DelfLocalFeatureConfig", "iou_threshold", 3, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, 1.0),
  ("delf_config_pb2.DelfLocalFeatureConfig", "max_feature_num", 4, FieldDescriptor.TYPE_INT32, _OPTIONAL, 1000),
  ("delf_config_pb2.DelfLocalFeatureConfig", "score_threshold", 5, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, 100.0),
  ("delf_config_pb2.DelfLocalFeatureConfig", "pca_parameters", 6, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("delf_config_pb2.DelfLocalFeatureConfig", "use_resized_coordinates", 7, FieldDescriptor.TYPE_BOOL, _OPTIONAL, False),
  ("delf_config_pb2.DelfGlobalFeatureConfig", "use_pca", 1, FieldDescriptor.TYPE_BOOL, _OPTIONAL, True),
  ("delf_config_pb2.DelfGlobalFeatureConfig", "pca_parameters", 2, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("delf_config_pb2.DelfGlobalFeatureConfig", "image_scales_ind", 3, FieldDescriptor.TYPE_INT32, _REPEATED, None),
  ("delf_config_pb2.DelfConfig", "model_path", 1, FieldDescriptor.TYPE_STRING, _OPTIONAL, None),
  ("delf_config_pb2.DelfConfig", "image_scales", 2, FieldDescriptor.TYPE_FLOAT, _REPEATED, None),
  ("delf_config_pb2.DelfConfig", "delf_local_config", 3, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("delf_config_pb2.DelfConfig", "max_image_size", 4, FieldDescriptor.TYPE_INT32, _OPTIONAL, -1),
  ("delf_config_pb2.DelfConfig", "min_image_size", 5, FieldDescriptor.TYPE_INT32, _OPTIONAL, -1),
  ("delf_config_pb2.DelfConfig", "use_square_images", 6, FieldDescriptor.TYPE_BOOL, _OPTIONAL, False),
  ("delf_config_pb2.DelfConfig", "use_local_features", 7, FieldDescriptor.TYPE_BOOL, _OPTIONAL, True),
  ("delf_config_pb2.DelfConfig", "use_global_features", 8, FieldDescriptor.TYPE_BOOL, _OPTIONAL, False),
  ("delf_config_pb2.DelfConfig", "delf_global_config", 9, FieldDescriptor.TYPE_MESSAGE, _OPTIONAL, None),
  ("delf_config_pb2.DelfConfig", "is_tf2_exported", 10, FieldDescriptor.TYPE_BOOL, _OPTIONAL, False),
  ("aggregation_config_pb2.AggregationConfig", "codebook_size", 1, FieldDescriptor.TYPE_INT32, _OPTIONAL, 65536),
  ("aggregation_config_pb2.AggregationConfig", "feature_dimensionality", 2, FieldDescriptor.TYPE_INT32, _OPTIONAL, 128),
  ("aggregation_config_pb2.AggregationConfig", "aggregation_type", 3, FieldDescriptor.TYPE_ENUM, _OPTIONAL, 3),
  ("aggregation_config_pb2.AggregationConfig", "use_l2_normalization", 4, FieldDescriptor.TYPE_BOOL, _OPTIONAL, True),
  ("aggregation_config_pb2.AggregationConfig", "codebook_path", 5, FieldDescriptor.TYPE_STRING, _OPTIONAL, None),
  ("aggregation_config_pb2.AggregationConfig", "num_assignments", 6, FieldDescriptor.TYPE_INT32, _OPTIONAL, 1),
  ("aggregation_config_pb2.AggregationConfig", "use_regional_aggregation", 7, FieldDescriptor.TYPE_BOOL, _OPTIONAL, False),
  ("aggregation_config_pb2.AggregationConfig", "alpha", 8, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, 3.0),
  ("aggregation_config_pb2.AggregationConfig", "tau", 9, FieldDescriptor.TYPE_FLOAT, _OPTIONAL, 0.0),
  ("aggregation_config_pb2.AggregationConfig", "feature_batch_size", 10, FieldDescriptor.TYPE_INT32, _OPTIONAL, 100),
]  # fmt: skip


@pytest.mark.parametrize(("message", "field", "number", "type_", "label", "default"), SPEC_FIELDS)
def test_fields_match_the_spec(message, field, number, type_, label, default):
  module_name, message_name = message.split(".")
  message_class = getattr(getattr(delf, module_name), message_name)
  descriptor = _fields(message_class)[field]
  assert descriptor.number == number
  assert descriptor.type == type_
  assert descriptor.is_repeated == (label == _REPEATED)
  if default is not None:
    assert descriptor.has_default_value
    assert descriptor.default_value == pytest.approx(default)
  if (
    descriptor.is_repeated
    and type_
    in (
      FieldDescriptor.TYPE_INT64,
      FieldDescriptor.TYPE_FLOAT,
      FieldDescriptor.TYPE_UINT32,
    )
    and message_name != "DelfConfig"
  ):
    assert descriptor.is_packed


def test_every_message_has_exactly_the_spec_fields():
  expected: dict[str, set[str]] = {}
  for message, field, *_ in SPEC_FIELDS:
    expected.setdefault(message, set()).add(field)
  for message, fields in expected.items():
    module_name, message_name = message.split(".")
    message_class = getattr(getattr(delf, module_name), message_name)
    assert set(_fields(message_class)) == fields, message


def test_datum_payload_is_a_oneof():
  oneof = delf.datum_pb2.DatumProto.DESCRIPTOR.oneofs_by_name["kind_oneof"]
  assert {f.name for f in oneof.fields} == {"float_list", "uint32_list"}


def test_aggregation_type_enum():
  enum = delf.aggregation_config_pb2.AggregationConfig.AggregationType
  assert [(name, enum.Value(name)) for name in enum.keys()] == [  # noqa: SIM118
    ("INVALID", 0),
    ("VLAD", 1),
    ("ASMK", 2),
    ("ASMK_STAR", 3),
  ]


def test_text_format_config_with_merge_semantics():
  text = """
    model_path: "parameters/model"
    image_scales: .25
    image_scales: 1.0
    max_image_size: 1024
    max_image_size: 512
    use_global_features: true
    delf_global_config { use_pca: false image_scales_ind: 3 image_scales_ind: 4 }
  """
  config = text_format.Merge(text, delf.delf_config_pb2.DelfConfig())
  assert config.max_image_size == 512
  assert list(config.image_scales) == [0.25, 1.0]
  assert config.use_local_features  # Default true.
  assert config.delf_local_config.max_feature_num == 1000
  assert list(config.delf_global_config.image_scales_ind) == [3, 4]


def test_proto_sources_are_proto2_in_package_delf_protos():
  for name in generate.PROTO_NAMES:
    source = (generate.PROTO_SOURCE_DIR / f"{name}.proto").read_text()
    assert 'syntax = "proto2";' in source
    assert "package delf.protos;" in source
  feature_source = pathlib.Path(generate.PROTO_SOURCE_DIR / "feature.proto").read_text()
  assert 'import "delf/protos/datum.proto";' in feature_source
