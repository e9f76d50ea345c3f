"""Benchmarks of haive-dataflow, each measured next to its baselines in the same run."""
