"""OpenAI-compatible HTTP server: `ponder serve` (see app.py for the routes, protocol.py for the fields)."""
