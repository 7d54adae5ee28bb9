"""Training of DELF/DELG (training.md §6): ``from delf.training.loop import train``.

The package file imports nothing heavy so that ``import delf.training`` stays cheap.
"""
