"""Benchmarks of the Luma provider's waits: ``python -m benchmarks.run`` (see ``benchmarks/RESULTS.md``)."""
