"""Embedding cache: keys, records, the hot and durable tiers, single-flight."""
