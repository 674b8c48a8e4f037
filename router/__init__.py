"""Routing: request types to adapter versions, the backend pool and placement."""
