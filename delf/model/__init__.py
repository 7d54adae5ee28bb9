"""DELF/DELG Keras 3 model: ResNet-50 backbone, attention, autoencoder and heads.

Import the concrete modules (``delf.model.delf_model`` etc.); this package
file stays empty so that ``import delf.model`` does not pull in TensorFlow.
"""
