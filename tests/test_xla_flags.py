"""The XLA flags the entry points set: appended once, never overriding the user's own."""

from echoprime_jax.runtime import xla_flags


def test_flags_are_appended_once_and_user_settings_win():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  out = xla_flags.apply(env)
  assert out == ("--xla_force_host_platform_device_count=2 "
                 "--xla_cpu_enable_concurrency_optimized_scheduler=false")
  assert xla_flags.apply(env) == out  # idempotent
  user = {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}
  assert xla_flags.apply(user) == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  assert xla_flags.apply({}) == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
