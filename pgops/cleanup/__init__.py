"""Batched cleanup of expired rows: policies (`policy`), database health throttling (`health`), the statements
(`statements`, `sql/cleanup/`), the walk through a relation (`walk`), counts (`count`), the batch loop (`loop`),
results (`result`), and a run end to end (`runner`)."""
