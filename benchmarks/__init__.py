"""Benchmarks for autoint_compiler (issue 5): grad-network forward, training step, definite integrals,
compile time.  Entry point: ``python -m benchmarks.run`` (``make bench``); see ``benchmarks/README.md``.
"""
