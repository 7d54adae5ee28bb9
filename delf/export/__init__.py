"""Export of trained DELF/DELG checkpoints as TF2 SavedModels (training.md §7).

The graph functions (`local_features`, `global_features`, `local_and_global`)
take any ``model_fn`` and are tested against toy models; `modules` wraps them
in ``tf.Module`` classes with the reference ``serving_default`` signatures and
`exporter` loads and verifies a checkpoint and writes the SavedModel.
Importing this package does not import TensorFlow; its submodules do.
"""
