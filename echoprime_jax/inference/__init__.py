"""Inference apart from training: load a run, embed, predict views, pool sections, export,
interpret one study. Nothing here imports `echoprime_jax.train`."""
