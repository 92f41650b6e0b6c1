"""The plugin's own test file, as its author writes it: bench's conformance suite for its backend."""

from harness.conformance import conformance_tests

test_conformance = conformance_tests(backend="numpy-ref", model="squares", plugins=["bench_numpy_plugin"])
