"""A run folder (a stage's --workdir): its layout and config (`folder`), its checkpoints."""
