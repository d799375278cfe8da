"""Peers for side-by-side benchmarks (optional extra `bench`)."""
