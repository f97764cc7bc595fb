"""PyTorch state dict <-> Flax NNX parameter tree: the generic half of weight import.

A model's import is described by a `KeyMapping`: a function naming the PyTorch key of every
Flax parameter path, plus the keys of the file that are deliberately ignored. From it
`torch_to_flax` builds the full Flax parameter tree, checking that every parameter is found,
that nothing in the file is left unused, and that every shape fits; all problems are reported
together in one `WeightImportError`.

The same mapping converts *gradients* (`torch_to_flax` on a dict of `.grad` tensors), which is
how the gradient-parity tests compare the two frameworks parameter by parameter.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from flax import nnx, traverse_util

Path = tuple[Any, ...]

# Flax leaf name -> PyTorch leaf name.
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


class WeightImportError(ValueError):
  """Raised when a checkpoint does not fit the model; lists every offending key at once."""

  def __init__(self, source: str, missing: list[str], unexpected: list[str],
               misshaped: list[str], limit: int = 30):
    self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped
    lines = [f"{source}: the checkpoint does not match the model."]
    for title, items in (("missing keys (the model needs them, the file lacks them)", missing),
                         ("unexpected keys (in the file, not used by the model)", unexpected),
                         ("mis-shaped keys", misshaped)):
      if items:
        lines.append(f"  {len(items)} {title}:")
        lines.extend(f"    {k}" for k in items[:limit])
        if len(items) > limit:
          lines.append(f"    ... and {len(items) - limit} more")
    hint = _renamed_hint(missing, unexpected)
    if hint:
      lines.append(f"  {hint}")
    super().__init__("\n".join(lines))


def _renamed_hint(missing: list[str], unexpected: list[str]) -> str:
  """A likely reason when the file's keys are the model's under another nesting, e.g. a head
  `Sequential(Dropout, Linear)` (head.1.weight) saved as a bare `Linear` (head.weight)."""
  pairs = []
  for m in missing:
    parts = m.split(".")
    for u in unexpected:
      q = u.split(".")
      if q[-1] == parts[-1] and len(q) < len(parts) and q[:-1] == parts[:len(q) - 1]:
        pairs.append((u, m))
  if not pairs:
    return ""
  u, m = pairs[0]
  return (f"hint: {u} looks like {m} with a layer's nesting removed (a head replaced by a "
          "bare Linear?); rename the file's keys to the model's (e.g. with --strip-prefix or "
          "a re-save) and convert again")


@dataclasses.dataclass(frozen=True)
class KeyMapping:
  """How one model's Flax parameters are named in PyTorch.

  torch_name: Flax path (e.g. ('blocks', 3, 'attn', 'qkv', 'kernel')) -> PyTorch key.
  ignore: regexes of file keys that are known and deliberately unused (e.g. BERT's pooler).
  """
  torch_name: Callable[[Path], str]
  ignore: tuple[str, ...] = ()

  def is_ignored(self, key: str) -> bool:
    return any(re.fullmatch(p, key) for p in self.ignore)


def dotted(path: Path) -> str:
  """('blocks', 3, 'attn', 'qkv', 'kernel') -> 'blocks.3.attn.qkv.weight' (leaf renamed)."""
  *mods, leaf = (str(p) for p in path)
  return ".".join([*mods, _LEAF_NAMES.get(leaf, leaf)])


def regex_renamer(rules: Iterable[tuple[str, str]]) -> Callable[[Path], str]:
  """A `torch_name` that applies the first matching (pattern, replacement) to `dotted(path)`."""
  compiled = [(re.compile(p), r) for p, r in rules]

  def torch_name(path: Path) -> str:
    name = dotted(path)
    for pattern, repl in compiled:
      new, n = pattern.subn(repl, name, count=1)
      if n:
        return new
    return name

  return torch_name


def torch_array_to_flax(path: Path, array: np.ndarray) -> np.ndarray:
  """Layout change for one tensor: Linear (out, in) -> (in, out); ConvNd (O, I, *k) -> (*k, I, O)."""
  if path[-1] == "kernel":
    if array.ndim == 2:
      return array.T
    if array.ndim >= 3:
      return np.transpose(array, (*range(2, array.ndim), 1, 0))
  return array


def flat_params(model: nnx.Module) -> dict[Path, jax.Array]:
  """Flat {path: array} of a model's `nnx.Param`s."""
  return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def abstract_params(model: nnx.Module) -> dict[Path, jax.ShapeDtypeStruct]:
  """Flat {path: shape/dtype} of a model's `nnx.Param`s (the model may be abstract)."""
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {p: jax.ShapeDtypeStruct(v.shape, v.dtype)
          for p, v in traverse_util.flatten_dict(pure).items()}


def torch_to_flax(params: Mapping[Path, jax.ShapeDtypeStruct], state_dict: Mapping[str, Any],
                  mapping: KeyMapping, source: str = "checkpoint",
                  reshape: Callable[[Path, np.ndarray], np.ndarray] | None = None
                  ) -> dict[Path, np.ndarray]:
  """Builds the flat Flax parameter dict from a PyTorch state dict (NumPy arrays or tensors).

  Raises `WeightImportError` listing every missing, unexpected and mis-shaped key.
  `reshape` may adapt a tensor after the standard layout change (e.g. ConvNeXt layer scale
  (C, 1, 1) -> (C,)).
  """
  out, consumed, missing, misshaped = {}, set(), [], []
  for path, spec in params.items():
    key = mapping.torch_name(path)
    if key not in state_dict:
      missing.append(key)
      continue
    consumed.add(key)
    src = _to_numpy(state_dict[key])
    array = torch_array_to_flax(path, src)
    if reshape is not None:
      array = reshape(path, array)
    if tuple(array.shape) != tuple(spec.shape):
      misshaped.append(f"{key}: file {tuple(src.shape)}, model needs "
                       f"{_torch_shape(path, spec.shape)} (Flax {'.'.join(map(str, path))} "
                       f"{tuple(spec.shape)})")
      continue
    out[path] = np.asarray(array, dtype=spec.dtype)
  unexpected = sorted(k for k in state_dict if k not in consumed and not mapping.is_ignored(k))
  if missing or unexpected or misshaped:
    raise WeightImportError(source, missing, unexpected, misshaped)
  return out


def load_into(model: nnx.Module, flat_params: Mapping[Path, Any]) -> nnx.Module:
  """Writes a flat {path: array} parameter dict into `model` (in place) and returns it."""
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(dict(flat_params)))
  nnx.update(model, state)
  return model


def materialize(abstract_model: nnx.Module, flat_params: Mapping[Path, Any],
                seed: int = 0) -> nnx.Module:
  """A concrete model from an abstract one (`nnx.eval_shape`) and its parameters.

  Skips random initialisation, which eagerly compiles one initializer per parameter shape
  (~17 s for MViT-S on CPU) only for the values to be overwritten. Non-parameter state
  (dropout RNG streams) gets fresh keys from `seed`.
  """
  graphdef, params, rest = nnx.split(abstract_model, nnx.Param, ...)
  nnx.replace_by_pure_dict(params, traverse_util.unflatten_dict(
      {p: jax.numpy.asarray(v) for p, v in flat_params.items()}))
  base_key = jax.random.key(seed)

  def concrete(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.split(base_key, x.shape) if x.shape else base_key
      return jax.numpy.zeros(x.shape, x.dtype)
    return x

  rest = jax.tree.map(concrete, rest)
  return nnx.merge(graphdef, params, rest)


def _torch_shape(path: Path, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape that would produce `flax_shape` (for error messages)."""
  if path[-1] == "kernel" and len(flax_shape) == 2:
    return tuple(reversed(flax_shape))
  if path[-1] == "kernel" and len(flax_shape) >= 3:
    return (flax_shape[-1], flax_shape[-2], *flax_shape[:-2])
  return tuple(flax_shape)


def _to_numpy(x: Any) -> np.ndarray:
  if isinstance(x, np.ndarray):
    return x
  if hasattr(x, "detach"):  # a torch tensor (only in tests / when torch is installed)
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":
      x = x.float()
    return x.numpy()
  return np.asarray(x)
