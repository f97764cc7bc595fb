"""A trained view classifier (a `configs/views.py` run folder) as a predictor of coarse views.

Used where videos have no view label: the export (predicted view per video), `interpret` (the
views of a new study, which feed the MIL aggregator's 512 + 11 features), the demo. A fine
(58-view) classifier's prediction is rolled up to the 11 coarse views (its children's
probabilities summed), the label space the MIL stage and EchoPrime's attention table use.

Clips: the classifier's own evaluation clip (frame 0 onwards, `data.frames` frames at stride 1,
its `image_size`), exactly as its validation read them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import numpy as np

from data_prep import views as views_lib

log = logging.getLogger("echoprime_jax.view_predictor")


@dataclasses.dataclass
class ViewPredictor:
  predict: Any  # jitted (params, rest, batch) -> (B, K) logits
  params: Any
  rest: Any
  taxonomy: views_lib.Taxonomy
  frames: int  # frames per clip (their logits averaged)
  image_size: int
  source: dict[str, Any]  # run folder and step

  @classmethod
  def from_run(cls, run_dir: str, mesh) -> "ViewPredictor":
    """The best kept checkpoint (by the run's best_metric) of a view-classifier run folder,
    replicated on `mesh`; the folder is opened read-only."""
    import jax
    from flax import nnx

    from echoprime_jax.train import frozen_towers, optimizer, view_classifier
    cfg = frozen_towers.run_config(run_dir, "views")
    taxonomy = views_lib.taxonomy(cfg.taxonomy)
    mcfg = view_classifier.model_config(cfg, len(taxonomy))
    abstract = nnx.eval_shape(lambda: view_classifier.create_model(mcfg, cfg.seed))
    tx, _ = optimizer.make_optimizer(cfg.optim, nnx.state(abstract, nnx.Param), 1)
    step, state = frozen_towers.restore_best(
        run_dir, cfg, lambda: view_classifier.init_state(mcfg, tx, cfg.seed), mesh)
    abstract.eval()
    graphdef = nnx.split(abstract, nnx.Param, ...)[0]
    predict = jax.jit(functools.partial(view_classifier.predict_step, graphdef=graphdef,
                                        cfg=cfg))
    log.info("view classifier from %s, step %d (%d %s views)", run_dir, step, len(taxonomy),
             taxonomy.name)
    return cls(predict, state["params"], state["rest"], taxonomy, int(cfg.data.frames),
               int(cfg.image_size), {"run": run_dir, "step": int(step)})

  def coarse_probabilities(self, video: np.ndarray, frame_mask: np.ndarray,
                           sharding=None) -> np.ndarray:
    """video (B, T, H, W, 3) uint8 (T >= self.frames; the first `frames` are read),
    frame_mask (B, T) -> (B, 11) coarse-view probabilities."""
    import jax
    batch = {"video": video[:, :self.frames], "frame_mask": frame_mask[:, :self.frames]}
    if sharding is not None:
      from echoprime_jax.data import pipeline
      batch = pipeline.to_global(batch, sharding)
    from echoprime_jax.train import view_classifier
    logits = np.asarray(jax.device_get(self.predict(self.params, self.rest, batch)), np.float64)
    return view_classifier.roll_up(logits, self.taxonomy.coarse_ids())

  def predict_split(self, index, split: str, batch_size: int, mesh
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every video of `split`, in record order -> (records (N,) int64, coarse probabilities
    (N, 11)). batch_size: global, over every device and process."""
    import jax
    from jax.experimental import multihost_utils
    from tqdm import tqdm

    from echoprime_jax import parallel
    from echoprime_jax.data import pipeline
    per_process = batch_size // jax.process_count()
    pcfg = pipeline.PipelineConfig(batch_size=per_process, clip_length=self.frames,
                                   clip_stride=1, frame_size=self.image_size, augment=None,
                                   num_epochs=1, require_report=False, workers=0)
    sharding = parallel.batch_sharding(mesh)
    records, probs, valid = [], [], []
    total = sum(len(s.records) for s in index.studies(split))
    bar = tqdm(total=total, desc=f"views {split}", unit="video",
               disable=jax.process_index() != 0)
    for batch in pipeline.clip_dataset(index, split, None, pcfg, train=False,
                                       taxonomy=self.taxonomy):
      p = self.coarse_probabilities(batch["video"], batch["frame_mask"], sharding)
      local = {"record": batch["record"], "valid": batch["valid"]}
      if jax.process_count() > 1:
        local = multihost_utils.process_allgather(local, tiled=True)
      records.append(np.asarray(local["record"]))
      valid.append(np.asarray(local["valid"]))
      probs.append(p)
      bar.update(int(np.sum(local["valid"])))
    bar.close()
    records, probs, valid = np.concatenate(records), np.concatenate(probs), np.concatenate(valid)
    order = np.argsort(records[valid], kind="stable")
    return records[valid][order].astype(np.int64), probs[valid][order]

