"""Aggregates, tables and figures computed from stored pair rows alone."""
