"""convlab's front door: ``python -m experiments <command>``."""
