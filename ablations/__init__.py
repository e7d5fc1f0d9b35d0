"""Sacred experiments for the paper's ablations (they share experiments/common.py)."""
