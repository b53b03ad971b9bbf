"""Jinja templates and static assets of the report (package data)."""
