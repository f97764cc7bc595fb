"""The layout of a run folder (a stage's --workdir), defined once; every reader and writer of
one goes through `RunFolder`.

  config.json           the stage config the run was made with (every later stage reads it)
  run.json              {"stage", "config_sha256" (of config.json's content), "layout"}
  checkpoints/<step>/   params/, train_state/, data/ (`run.checkpoints`)
  metrics.jsonl         one JSON object per logged step; tensorboard/ the same for TensorBoard
  tokenizer/            the WordPiece vocabulary (stages with a text tower)
  embeddings/<split>.*  the frozen towers' embeddings of a split (MIL), with their fingerprint
  export/               what a stage exports for later ones (MIL: <split>_sections.npz,
                        <split>_section_ranks.npz, <split>_attention.csv)
  attention/, confusion/   evaluation artefacts per step (MIL's table, the views' matrix)
  attention_table.csv   MIL: the learned table in EchoPrime's format

Layout 1 (before run.json): config.json with the older field names (read through
`configs.moved_fields.upgrade`) and checkpoints holding one `state` item.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import ml_collections

LAYOUT = 2
STAGES = ("pretrain", "views", "mil")  # the stages a run folder can hold (cfg.stage)
# Fields a resumed run may change with the trainer's --allow_safe_changes: how long it runs and
# how often it logs, evaluates and saves, and how fast it reads; never what it learns from or how.
SAFE_TO_CHANGE = ("total_steps", "epochs", "log_every", "eval_every", "checkpoint_every",
                  "keep_checkpoints", "peak_tflops", "host_malloc", "eval_batch_size",
                  "data.read_threads", "data.read_buffer", "data.workers",
                  "remat")  # recomputing activations changes memory, not the maths


class ConfigChanged(ValueError):
  """A run folder with checkpoints was asked to resume under another config."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out: dict[str, Any] = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """{dotted field: (old value, new value)} where two config dicts differ (absent: None)."""
  a, b = _flat(old), _flat(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _shown(value: Any) -> str:
  """A value for an error line; paths are not printed (they may name people or places)."""
  if isinstance(value, str) and os.sep in value:
    return "<a path>"
  return repr(value)


def config_sha256(config: dict[str, Any]) -> str:
  """The hash of a config's canonical JSON (sorted keys): equal configs, equal hashes."""
  text = json.dumps(config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def _write_json(path: str, obj: Any) -> None:
  """Written to a temporary sibling, then renamed: a reader never sees half a file."""
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=2, default=str)
  os.replace(path + ".tmp", path)


@dataclasses.dataclass(frozen=True)
class RunFolder:
  root: str

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  @property
  def config_file(self) -> str:
    return self.path("config.json")

  @property
  def checkpoints(self) -> str:
    return self.path("checkpoints")

  @property
  def tokenizer(self) -> str:
    return self.path("tokenizer")

  @property
  def metrics(self) -> str:
    return self.path("metrics.jsonl")

  @property
  def tensorboard(self) -> str:
    return self.path("tensorboard")

  @property
  def attention_table(self) -> str:
    return self.path("attention_table.csv")

  @property
  def embedding_cache(self) -> str:
    return self.path("embeddings")

  def embeddings(self, split: str) -> str:
    return os.path.join(self.embedding_cache, f"{split}.npz")

  def export(self, name: str = "") -> str:
    return self.path("export", name) if name else self.path("export")

  # MIL's exports of a split
  def section_embeddings(self, split: str) -> str:
    return self.export(f"{split}_sections.npz")

  def section_ranks(self, split: str) -> str:
    return self.export(f"{split}_section_ranks.npz")

  def video_attention(self, split: str) -> str:
    return self.export(f"{split}_attention.csv")

  def artefact(self, kind: str, name: str = "") -> str:
    """A per-step evaluation file (or, without a name, their folder): kind "attention" or
    "confusion"."""
    if kind not in ("attention", "confusion"):
      raise ValueError(f"unknown artefact kind {kind!r}")
    return self.path(kind, name) if name else self.path(kind)

  # -- the config ------------------------------------------------------------------------------

  def write_config(self, config: dict[str, Any]) -> None:
    """config.json and run.json (its hash, the layout); process 0 only. The unset aliases of
    moved fields are left out (`configs.moved_fields`)."""
    from configs import moved_fields
    os.makedirs(self.root, exist_ok=True)
    config = moved_fields.drop_unset(json.loads(json.dumps(config, default=str)))
    _write_json(self.config_file, config)
    _write_json(self.path("run.json"), {"stage": config.get("stage", ""),
                                        "config_sha256": config_sha256(config),
                                        "layout": LAYOUT})

  def has_checkpoints(self) -> bool:
    """At least one saved step (a finished Orbax step folder is named by its number)."""
    return os.path.isdir(self.checkpoints) and any(name.isdigit()
                                                   for name in os.listdir(self.checkpoints))

  def check_resume(self, config: dict[str, Any], allow_safe_changes: bool = False) -> None:
    """ConfigChanged, naming the differing fields, when this folder holds checkpoints made
    under another config (a resumed run would mix the two, and checkpoint retention would then
    delete the older run's steps). With allow_safe_changes, SAFE_TO_CHANGE fields may differ."""
    from configs import moved_fields
    if not (os.path.isfile(self.config_file) and self.has_checkpoints()):
      return  # nothing saved yet: nothing to protect
    with open(self.config_file) as f:
      old = moved_fields.drop_unset(moved_fields.upgrade(json.load(f)))
    new = moved_fields.drop_unset(json.loads(json.dumps(config, default=str)))
    changes = config_changes(old, new)
    refused = {k: v for k, v in changes.items()
               if not (allow_safe_changes and k in SAFE_TO_CHANGE)}
    if refused:
      listed = ", ".join(f"{k} {_shown(a)} -> {_shown(b)}" for k, (a, b) in refused.items())
      safe = [k for k in refused if k in SAFE_TO_CHANGE]
      hint = (" (" + ", ".join(safe) + " may change with --allow_safe_changes)") if safe else ""
      raise ConfigChanged(f"{self.root}: holds checkpoints made with another config; "
                          f"differing: {listed}. Resume with the recorded config, or start a "
                          f"new --workdir{hint}")

  def read_config(self, stage: str | None = None) -> ml_collections.ConfigDict:
    """The run's config (older field names moved to their homes); `stage` checks its kind."""
    from configs import moved_fields
    if not os.path.isfile(self.config_file):
      expected = f"configs/{stage}.py" if stage else "a configs/*.py"
      raise FileNotFoundError(f"{self.root}: no config.json; expected the --workdir of "
                              f"{expected} run")
    with open(self.config_file) as f:
      config = moved_fields.upgrade(json.load(f))
    if stage is not None and config.get("stage") != stage:
      raise ValueError(f"{self.config_file}: stage {config.get('stage')!r}, expected {stage!r}")
    return ml_collections.ConfigDict(config)

  def layout(self) -> int:
    """LAYOUT for a folder written by this version, 1 before run.json existed."""
    try:
      with open(self.path("run.json")) as f:
        return int(json.load(f).get("layout", 1))
    except FileNotFoundError:
      return 1
