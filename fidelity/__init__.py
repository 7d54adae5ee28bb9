"""The oracle suite: our implementation against the runnable reference, side by side.

Not part of the installed package and not run by ``make test``: ``make fidelity``
(``python -m fidelity``) runs it, and CI runs it after the tests. The reference is
never imported here; it runs in its own processes and environment
(``fidelity.reference_env``), driven by the standalone scripts in
``fidelity/reference_side/``; our side runs our scripts and the drivers in
``fidelity/our_side/``. One module per check in ``fidelity/checks/``.
"""
