"""pytest fixtures (registered by tests/conftest.py)."""
