"""Process set-up done before JAX starts: XLA flags, the host allocator."""
