"""quarantine-mirror: a caching mirror for npm, PyPI and Maven that holds new releases in
quarantine and refuses blocked ones."""

__version__ = "0.1.0"
