"""Fikiri Jobs: the background-job layer (queue machinery, no domain logic)."""
