"""Integrations of the SDK with agent frameworks (optional extras)."""
