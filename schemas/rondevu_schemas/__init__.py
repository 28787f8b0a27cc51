"""Pydantic v2 models of the Rondevu 0.5.4 wire format (PROTOCOL.md §1-§10)."""
