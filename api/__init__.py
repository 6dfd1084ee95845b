"""Tollgate: the billing layer and app substrate for AI products."""

__version__ = "0.1.0"
