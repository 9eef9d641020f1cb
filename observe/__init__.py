"""Seeing a run work: the status command and the live dashboard."""
