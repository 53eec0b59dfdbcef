"""Benchmarks of the lab: speed, accuracy and protocol checks (run each with python -m benchmarks.NAME)."""
