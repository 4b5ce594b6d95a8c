"""Environments the worker builds for its runs."""
