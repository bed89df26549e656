"""Test-only: loads the crashing decoder (see crashswitch.py) in every Python process
started with this folder on ``PYTHONPATH``."""

import crashswitch  # noqa: F401
