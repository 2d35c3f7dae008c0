"""The benchmark harness of issue 5: see ``python -m benchmarks --help`` and benchmarks/RESULTS.md."""
