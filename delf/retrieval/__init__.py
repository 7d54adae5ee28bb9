"""Retrieval evaluation: Revisited Oxford/Paris and GLDv2 metrics, DELG retrieval.

Sub-modules are imported explicitly (``from delf.retrieval import revisited``);
none of the evaluation modules imports TensorFlow.
"""
