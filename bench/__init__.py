"""crossinfer benchmarks: raw framework loops vs plain Beam RunInference vs crossinfer.

Benchmarks are not tests: each module is one command (``python -m bench.<name>``)
that measures every variant side by side in one run and writes
``bench/results/<name>.json``. See ``bench/README.md``.
"""
