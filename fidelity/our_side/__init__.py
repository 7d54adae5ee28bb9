"""Drivers run as separate processes in our environment (``python -m fidelity.our_side.x``)."""
