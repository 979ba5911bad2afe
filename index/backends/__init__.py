"""Backend adapters."""
