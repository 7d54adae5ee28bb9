"""GLDv2 data: demo data, CSV handling, the train/validation split, TFRecords, input pipeline.

Importing this package (or any module in it except ``pipeline``) never imports
TensorFlow: the dataset build validates images with Pillow and writes TFRecords
with its own writer, so its worker processes start in milliseconds.
"""
