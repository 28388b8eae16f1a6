"""Experiments: the main LEAK pipeline (`python -m experiments.semkitti`), configs, benchmarks."""
