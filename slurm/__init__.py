"""The SLURM launcher of the reproduction: every table and ablation run submitted through submitit (launch_all.py),
its cluster options (options.py), the cluster queries (cluster.py), the checkpointable job (jobs.py), the plan and
its GPU-hour estimate (plan.py) and the status table (status.py)."""
