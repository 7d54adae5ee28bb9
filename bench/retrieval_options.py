r"""Benchmark: effect of alpha-QE, DBA and float16 stores on a Revisited-format benchmark.

Runs perform_retrieval (global ranking only) on the same features with the options
off (the reference's behaviour) and on, and prints medium/hard mAP for each. The
float16 row converts the features to a float16 feature store first.

Usage (after `make demo`, on the demo benchmark's features):
  python -m bench.retrieval_options --dataset_file_path=demo_output/benchmark/gnd_demo.mat \
    --query_features_dir=demo_output/benchmark/features/query \
    --index_features_dir=demo_output/benchmark/features/index
"""

from __future__ import annotations

import argparse
import os
import tempfile

from delf import feature_conversion
from delf.retrieval import retrieval


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset_file_path", required=True)
  parser.add_argument("--query_features_dir", required=True)
  parser.add_argument("--index_features_dir", required=True)
  parser.add_argument("--top_n", default="1,2,3")
  args = parser.parse_args()
  runs = [("baseline (reference: no QE, no DBA)", {})]
  for n in (int(v) for v in args.top_n.split(",")):
    runs.append((f"alpha-QE top {n}, alpha 3", {"query_expansion_top_n": n}))
  for n in (int(v) for v in args.top_n.split(",")):
    runs.append((f"DBA top {n}, alpha 3", {"dba_top_n": n}))
    runs.append((f"DBA top {n} + alpha-QE top {n}", {"dba_top_n": n, "query_expansion_top_n": n}))
  with tempfile.TemporaryDirectory() as root, open(os.devnull, "w") as quiet:
    stores = {}
    for name, folder in (("query", args.query_features_dir), ("index", args.index_features_dir)):
      stores[name] = os.path.join(root, name)
      feature_conversion.files_to_store(folder, stores[name], dtype="float16", out=quiet)
    runs.append(("float16 feature stores", {"store": True}))
    print(f"{'run':44s} {'medium mAP':>10s} {'hard mAP':>10s}")
    for label, options in runs:
      use_store = options.pop("store", False)
      config = retrieval.RetrievalConfig(
        dataset_file_path=args.dataset_file_path,
        query_features_dir=stores["query"] if use_store else args.query_features_dir,
        index_features_dir=stores["index"] if use_store else args.index_features_dir,
        output_dir=os.path.join(root, "out"),
        **options,
      )
      result = retrieval.perform_retrieval(config, out=quiet)
      mean_ap = result.mean_average_precision
      print(f"{label:44s} {100 * mean_ap['medium']:10.2f} {100 * mean_ap['hard']:10.2f}")


if __name__ == "__main__":
  main()
