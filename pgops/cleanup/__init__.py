"""Batched cleanup of expired rows: policies (`policy`), database health throttling (`health`), the batch loop
(`runner`)."""
