"""Test-wide settings: deterministic CPU maths, two threads for torch like the CI machine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
