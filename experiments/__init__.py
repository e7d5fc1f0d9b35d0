"""Sacred experiments for the paper's tables (common.py holds the shared config and driver)."""
