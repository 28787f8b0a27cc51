"""The Rondevu signaling server (wire protocol 0.5.4): ASGI app, storage, CLI entry."""
