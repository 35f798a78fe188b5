"""Metrics, health and (later) alerts."""
