"""Model-driven fuzzing of every operation Khoa serves (see test_fuzz_operations.py)."""
