"""Training: the loop, the stages, checkpoints."""
