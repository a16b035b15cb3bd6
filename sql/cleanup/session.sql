-- A batch's commit need not wait for its WAL to reach disk: a crash loses at most the last batches, whose rows
-- are still expired and go in the next run. (The health throttle watches the replicas.)
SET synchronous_commit = off
