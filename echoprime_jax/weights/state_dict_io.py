"""Reading PyTorch weight files safely, into `{key: np.ndarray}`.

* `.safetensors`: read with `safetensors.numpy` (no torch needed, no code execution).
* `.pt` / `.pth` / `.bin` / `.ckpt`: `torch.load(..., weights_only=True)` only. A file that
  needs arbitrary unpickling is refused with an explanation; we never unpickle untrusted code.
  torch is needed for these (it is not a runtime dependency of the package).

Checkpoints that wrap the weights (`{"state_dict": ...}`, `{"model": ...}`,
`{"model_state_dict": ...}`, DDP `module.` prefixes) are unwrapped.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


class UnsafeCheckpointError(ValueError):
  """The file cannot be read without executing pickled code."""


def load_state_dict(path: str, strip_prefix: str | None = None) -> dict[str, np.ndarray]:
  """Tensors of a weight file as NumPy arrays (fp32 for bf16/fp16 tensors kept as stored)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such weight file")
  if path.endswith(".safetensors"):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
      sd = dict(load_file(path))
    except SafetensorError as e:
      raise ValueError(f"{path}: not a readable .safetensors file ({e}); is it complete?") from None
  else:
    sd = _load_torch_file(path)
  sd = unwrap(sd)
  if strip_prefix:
    sd = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v for k, v in sd.items()}
  elif sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
    sd = {k[len("module."):]: v for k, v in sd.items()}
  return sd


def unwrap(obj: Any) -> dict[str, Any]:
  """Finds the tensor dict inside common checkpoint wrappers."""
  for _ in range(3):
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
      for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], dict):
          obj = obj[key]
          break
      else:
        break
  if not isinstance(obj, dict):
    raise ValueError(f"expected a state dict, found {type(obj).__name__}")
  return {k: v for k, v in obj.items() if _is_array(v)}


def find_hf_weights(directory: str) -> str:
  """The weight file of a Hugging Face checkpoint directory (safetensors preferred)."""
  for name in ("model.safetensors", "pytorch_model.bin"):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  if any(n.endswith(".index.json") for n in os.listdir(directory)):
    raise ValueError(f"{directory}: sharded checkpoints are not supported; merge the shards "
                     "into one model.safetensors first")
  raise FileNotFoundError(f"{directory}: no model.safetensors or pytorch_model.bin")


def load_tensor(path: str) -> np.ndarray:
  """A `.pt` file holding one tensor (or a dict of exactly one), read with
  `torch.load(weights_only=True)` -> float32 / integer NumPy array."""
  import torch
  obj = _load_torch_object(path)
  if isinstance(obj, dict) and len(obj) == 1:
    obj = next(iter(obj.values()))
  if not isinstance(obj, torch.Tensor):
    raise ValueError(f"{path}: expected one tensor, found {type(obj).__name__}")
  return _to_numpy(obj)


def _load_torch_file(path: str) -> dict[str, Any]:
  return {k: _to_numpy(v) for k, v in unwrap(_load_torch_object(path)).items()}


def _to_numpy(v) -> np.ndarray:
  import torch
  if v.dtype in (torch.bfloat16, torch.float16):
    v = v.float()
  return v.detach().cpu().numpy()


def _load_torch_object(path: str) -> Any:
  """Whatever `torch.load(weights_only=True)` reads from `path` (tensors, dicts, lists)."""
  try:
    import torch
  except ImportError as e:
    # a user's environment, not a bug: one line (ValueError), what to install
    raise ValueError(f"{path}: reading PyTorch pickle files needs torch >= 2.6 (pip install "
                     "'torch>=2.6'), or convert the file to .safetensors first") from e
  if tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2]) < (2, 6):
    # before 2.6, weights_only=True could be bypassed (CVE-2025-32434)
    raise ValueError(f"{path}: reading .pt files safely needs torch >= 2.6 (found "
                     f"{torch.__version__}); upgrade it or convert the file to .safetensors")
  if os.path.getsize(path) == 0:
    raise ValueError(f"{path}: the file is empty; point --input at the weights file")
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError (and others) for unsafe content
    raise UnsafeCheckpointError(
        f"{path}: refused to load: the file is not a plain weights file ({_why(e)}). Re-save "
        "it as a state dict of tensors (torch.save(model.state_dict(), ...)) or as "
        ".safetensors.") from e


def _why(error: Exception) -> str:
  """torch's refusal in a few words: the global (class or function) the file refers to (torch's
  own message is many lines with terminal colour codes), else its first line."""
  text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
  found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
  if found:
    return f"it refers to {found.group(1)}, which could run code"
  first = next((line.strip() for line in text.splitlines() if line.strip()), "")
  return first or f"{type(error).__name__}: unreadable"


def _is_array(v: Any) -> bool:
  return isinstance(v, np.ndarray) or (hasattr(v, "shape") and hasattr(v, "dtype"))


def _is_tensor_dict(d: dict) -> bool:
  return bool(d) and all(_is_array(v) for v in d.values())
