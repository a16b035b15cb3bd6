-- A relation's size in blocks, and the block size: the range a heap walk covers.
SELECT pg_relation_size(%(relation)s) / current_setting('block_size')::int, current_setting('block_size')::int
