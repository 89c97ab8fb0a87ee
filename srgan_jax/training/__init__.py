"""Training: the explicit state (`state`), the pure train steps (`steps`) and the loop (`loop`)."""
