"""Index advisor: read the workload, find the indexes that pay for themselves, prove it with the planner."""
