"""One module per dashboard page: each exposes `routes()`, its routes relative to `/ui/`."""
