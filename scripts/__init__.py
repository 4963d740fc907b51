"""Command-line entry points (thin wiring only)."""
