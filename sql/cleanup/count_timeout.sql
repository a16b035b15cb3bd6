-- Counting what is left after a run may take a second at most: past that, the estimate serves.
SET LOCAL statement_timeout = '1s'
