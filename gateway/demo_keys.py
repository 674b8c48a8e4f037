"""The well-known API keys of demo mode, and nothing else.

The gateway's settings admit them in demo mode only (and refuse them outside it); clients
that drive a demo gateway (the load tests, the demo wing, the admin CLI's default) import
them from here, which pulls in nothing of the server.
"""

from __future__ import annotations

DEMO_INFERENCE_KEY = "demo-inference-key"
DEMO_ADMIN_KEY = "demo-admin-key"
