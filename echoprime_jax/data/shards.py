"""What data prep wrote: the shard files of each split, the study index, record lookup.

A folder from `python -m data_prep.convert` holds `echoprime-<split>.array_record-i-of-n`
(one record per video, `data_prep.record_schema`) and `studies.parquet` (each study's videos as
(shard, record index), their views, the report and its parsed sections). Grain reads the
shards of a split as one `ArrayRecordDataSource` whose global index is the concatenation of
the files in name order; `ShardIndex` maps (shard, record index) to that global index.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from data_prep import record_schema
from data_prep import views as views_lib


@dataclasses.dataclass(frozen=True)
class Study:
  """One study of a split: its videos (as global record indices) and its report."""
  study_id: str
  records: tuple[int, ...]  # global indices into the split's ArrayRecordDataSource
  views: tuple[int, ...]  # COARSE_VIEWS index per video (fine labels rolled up), -1 unknown
  sections: dict[str, str]  # parsed report; {} when the study has no report
  view_names: tuple[str, ...] = ()  # the label as data prep recorded it ("" unlabelled)

  @property
  def has_report(self) -> bool:
    return any(v.strip() for v in self.sections.values())


class ShardIndex:
  """The shard files and studies of one converted folder."""

  def __init__(self, data_dir: str):
    if not os.path.isfile(os.path.join(data_dir, "studies.parquet")):
      raise FileNotFoundError(f"{data_dir}: no studies.parquet (not a data_prep output folder?)")
    self.data_dir = data_dir

  def shard_paths(self, split: str) -> list[str]:
    prefix = f"{record_schema.DATASET_NAME}-{split}.array_record-"
    names = sorted(n for n in os.listdir(self.data_dir)
                   if n.startswith(prefix) and not n.endswith(".tmp"))
    if not names:
      raise FileNotFoundError(f"{self.data_dir}: no shards for split {split!r}")
    return [os.path.join(self.data_dir, n) for n in names]

  def shard_offsets(self, split: str) -> dict[str, int]:
    """{shard file name: global index of its first record}."""
    from array_record.python.array_record_module import ArrayRecordReader
    offsets, total = {}, 0
    for path in self.shard_paths(split):
      offsets[os.path.basename(path)] = total
      try:
        reader = ArrayRecordReader(path)
        total += reader.num_records()
        reader.close()
      except (OSError, RuntimeError, ValueError) as e:  # a truncated or foreign file
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"{path}: not a readable shard ({detail}); was the conversion "
                         "complete? rerun data_prep.convert") from None
    return offsets

  def studies(self, split: str) -> list[Study]:
    """The split's studies in study-id order (pseudonyms: a stable, PHI-free order)."""
    import pyarrow.parquet as pq
    offsets = self.shard_offsets(split)
    coarse = views_lib.coarse_taxonomy()
    path = os.path.join(self.data_dir, "studies.parquet")
    try:
      table = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
      raise ValueError(f"{path}: unreadable ({' '.join(str(e).split())[:200]}); was the "
                       "conversion complete? rerun data_prep.convert") from None
    out = []
    for row in sorted(table, key=lambda r: r["study_id"]):
      if row["split"] != split:
        continue
      missing = sorted(set(row["shards"]) - set(offsets))
      if missing:
        raise ValueError(f"{self.data_dir}: studies.parquet names shard {missing[0]}, which is "
                         "not there; copy the whole folder, or rerun data_prep.convert")
      records = tuple(offsets[s] + int(i) for s, i in zip(row["shards"], row["record_indices"]))
      names = tuple(str(v or "") for v in row["views"])
      views = tuple(coarse.index(v) for v in names)
      out.append(Study(row["study_id"], records, views, json.loads(row["sections"] or "{}"),
                       names))
    return out


def video_table(studies: list[Study], require_report: bool,
                taxonomy: views_lib.Taxonomy | None = None) -> np.ndarray:
  """(N, 3) int64 rows (global record index, study position, view) over the studies' videos;
  view: the coarse index, or the class in `taxonomy` (-1 unlabelled)."""
  rows = [(r, s, v if taxonomy is None else taxonomy.index(name))
          for s, study in enumerate(studies) if study.has_report or not require_report
          for r, v, name in zip(study.records, study.views,
                                study.view_names or ("",) * len(study.records))]
  return np.asarray(rows, np.int64).reshape(-1, 3)
