"""What both sides use: the API side (router, CLI) and the host side (the worker)."""
