"""The stages the trainer runs: each module has `setup(cfg, run, mesh) -> Stage`."""
