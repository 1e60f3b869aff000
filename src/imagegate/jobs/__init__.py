"""Async image jobs: the durable table, the workers that run them, signed webhooks (docs/jobs.md)."""
