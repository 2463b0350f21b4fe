"""The `runner` command line: thin dispatch, no science, no heavy imports at start-up."""
