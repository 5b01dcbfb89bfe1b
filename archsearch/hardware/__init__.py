"""Measuring the host: thread/memory-format runtime, latency measurement, calibration."""
