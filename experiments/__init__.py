"""Sacred experiments for the paper's tables (common.py holds the shared config and driver)."""

from pcl.flags import check_declarations

# every command of this package reads the methods' and backbones' declarations while importing its modules: read
# them first, so that a mistake in one is the command's one line, exit 2 (not a traceback through the imports)
check_declarations()
