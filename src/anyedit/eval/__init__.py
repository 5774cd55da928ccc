"""Evaluation: benchmark datasets, metrics, locality probes, the resumable runner and its run directory, report
tables and plots."""
