"""Checkpoint files: atomic save, one checked load (io), and the formats built on them."""
