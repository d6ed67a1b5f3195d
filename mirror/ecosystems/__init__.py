"""One module per ecosystem, each behind the small `Ecosystem` protocol in `base.py`."""
