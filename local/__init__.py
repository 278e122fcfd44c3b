"""Local servers for the demo, the tests and the bench: a private Postgres cluster, a Prefect
server, and the demo that runs the pipeline on them. Nothing here runs in production."""
