"""The `tam` command line (cli.main) and its `tam limits` administration (cli.limits)."""
