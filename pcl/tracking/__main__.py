"""`python -m pcl.tracking ...`: the tracking layer's command line (pcl.tracking.cli)."""
import sys

from pcl.tracking.cli import main

sys.exit(main())
