"""Config-driven feature extraction from exported DELF/DELG SavedModels (inference.md §2).

`image_io` (RgbLoader), `resize` (ResizeImage), `postprocess` / `pca` (NumPy
post-processing), `config_io` (text-format DelfConfig) and `extractor`
(MakeExtractor) do the work per image; `extract_features` runs a list of
images to .delf files. Importing this package does not import TensorFlow;
`extractor` and `extract_features` do.
"""
