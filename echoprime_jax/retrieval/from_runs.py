"""The candidate database from a MIL run folder (`python -m echoprime_jax.index build`): the
studies of a split (default: the MIL run's training split) become candidates: their report and
section embeddings (the text tower's, from the run's embedding cache), sections, and labels
extracted by a rules file (default `retrieval/label_rules.json`); an index over the embeddings
(exact below 20,000 candidates, ScaNN above, or forced). Its evaluation on the run's held-out
split is `evaluation/retrieval_figures.py`'s.
"""

from __future__ import annotations

import os


from echoprime_jax.run.folder import RunFolder


def _mil_config(run: str) -> dict:
  return RunFolder(run).read_config("mil").to_dict()


def run_file(path: str) -> str:
  """A file a MIL run wrote (`RunFolder.embeddings`, `.export`), or a clear error."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: not found (has the MIL stage run to the end for this "
                            "split?)")
  return path


def split_reports(data_dir: str, split: str, study_ids) -> list[dict[str, str]]:
  """The report sections of `study_ids` (in that order) from the shards of `split`."""
  from echoprime_jax.data.shards import ShardIndex
  by_id = {s.study_id: s.sections for s in ShardIndex(data_dir).studies(split)}
  missing = [s for s in study_ids if s not in by_id]
  if missing:
    raise ValueError(f"{data_dir}: {len(missing)} studies of the embeddings are not in split "
                     f"{split!r} (another data folder?)")
  return [by_id[s] for s in study_ids]


def build_database(mil_run: str, out: str, *, split: str = "", rules: str = "",
                   index: str = "auto", overwrite: bool = False, **options):
  """-> the CandidateDatabase of `split` (default the run's training split), saved to `out`
  (an existing database of ours replaced only with `overwrite`, once the new one is complete).
  options: ScaNN's num_leaves / leaves_to_search / reorder (0 or absent: its defaults)."""
  from echoprime_jax.run import output_folder
  output_folder.check_replaceable(out, "database", overwrite)  # before the work
  from echoprime_jax.data.split_embeddings import SplitEmbeddings
  from echoprime_jax.retrieval import database
  from echoprime_jax.retrieval.labels import DEFAULT_RULES
  cfg = _mil_config(mil_run)
  rules = rules or DEFAULT_RULES
  split = split or cfg["data"]["train_split"]
  path = run_file(RunFolder(mil_run).embeddings(split))
  emb = SplitEmbeddings.load(path)
  if emb.report_embedding is None:
    raise ValueError(f"{path}: made by an older version without report embeddings; delete "
                     "the run's embeddings/ folder and rerun the MIL stage")
  sections = split_reports(cfg["data"]["dir"], split, emb.study_ids)
  options = {k: v for k, v in options.items() if v} if index != "exact" else {}
  db = database.build(emb.study_ids, emb.report_embedding, sections, rules, index,
                      section_names=emb.sections, section_embeddings=emb.section_embedding,
                      **options)
  db.save(out, rules, overwrite)
  return db
