"""Production: the dispatch webhook, `serve`, the Docker image and the Edge Function."""
