"""In-memory fakes for the sans-IO core's harness tests (never used by drivers)."""
