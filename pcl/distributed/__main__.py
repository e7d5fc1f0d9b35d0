"""`python -m pcl.distributed ...`: the torchrun / srun entry point; the command line itself is pcl.distributed.cli."""
from pcl.distributed.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
