"""Benchmarks: each module builds its own data and prints ratios against a baseline measured
in the same run. ``python -m bench`` runs them all; ``python -m bench.<name>`` runs one."""
