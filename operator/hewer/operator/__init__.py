"""Kubernetes operator for Hewer (see issue: operator)."""
