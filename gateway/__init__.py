"""The HTTP face of lora-gateway: OpenAI-compatible API, auth, limits, metrics, admin, CLI."""
