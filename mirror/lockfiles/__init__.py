"""Pinned versions read from what teams hold (lockfiles, dependency lists, SBOMs), for
`mirror preflight`. Pure: text in, pins out; no I/O, no network. `formats` recognises a file by
its content and dispatches; `pins` holds the shared types; one module per family of formats."""
