"""Shared fixtures: every test is guarded against hangs by pytest-timeout (see pyproject)."""
