"""The `mirror` command. `main` parses the arguments and dispatches (the entry point:
`python -m mirror` and the `mirror` script); `serve`, `settings` (`mirror config`) and
`state` work from the settings; the admin commands (`rules`, `queries`, `preflight`,
`osvimport`) talk to a running mirror through `client` and print with `tables`; `exits`
holds the exit codes."""
