"""Hewer engine: a Hatchet-protocol durable task engine on PostgreSQL."""
