"""How the flows run: CLI, local Prefect server, serve, webhook, Docker image, Edge Function."""
