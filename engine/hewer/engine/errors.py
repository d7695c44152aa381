"""Errors the command line reports as one line, without a traceback."""

from __future__ import annotations


class EngineStartError(RuntimeError):
    """The engine could not start (e.g. a port in use); the message says what to fix."""
