"""Benchmarks and device checks: training throughput (throughput.py), the fast path against the eager step on a GPU
(gpu_check.py, gpu_sanity.py, device_check.sh) and the measured epoch times the launcher costs runs with."""
