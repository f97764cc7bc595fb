"""The run folder: its config and hash, stage checks, the older config field names."""

import json

import pytest

from configs import moved_fields
from configs import pretrain as pretrain_config
from echoprime_jax.run.folder import LAYOUT, RunFolder, config_sha256


def test_config_and_its_hash_are_recorded(tmp_path):
  cfg = pretrain_config.get_config("tiny")
  run = RunFolder(str(tmp_path / "run"))
  assert run.layout() == 1  # nothing written yet: an older (or no) run
  run.write_config(cfg.to_dict())
  info = json.loads((tmp_path / "run" / "run.json").read_text())
  recorded = moved_fields.drop_unset(cfg.to_dict())  # without the unset aliases
  assert "clip_length" not in recorded["data"] and "clip_length" in cfg.data
  assert info == {"stage": "pretrain", "config_sha256": config_sha256(recorded),
                  "layout": LAYOUT}
  back = run.read_config("pretrain")
  assert back.towers.video.num_frames == 8 and back.to_dict() == recorded
  cfg.optim.learning_rate = 1e-2
  assert config_sha256(cfg.to_dict()) != info["config_sha256"]
  with pytest.raises(ValueError, match="stage 'pretrain', expected 'mil'"):
    run.read_config("mil")
  with pytest.raises(FileNotFoundError, match="no config.json"):
    RunFolder(str(tmp_path / "nothing")).read_config("views")


def test_each_value_has_one_home_and_an_old_field_must_agree_with_it():
  cfg = pretrain_config.get_config("tiny")
  moved_fields.check(cfg)  # unset aliases: fine
  cfg.data.clip_length = 8  # the same as towers.video.num_frames: accepted
  moved_fields.check(cfg)
  cfg.data.clip_length = 16
  with pytest.raises(ValueError, match=r"data\.clip_length=16 .*towers\.video\.num_frames=8"):
    moved_fields.check(cfg)
  cfg = pretrain_config.get_config("tiny")
  cfg.towers.text.out_dim = 32
  with pytest.raises(ValueError, match=r"towers\.text\.out_dim=32 .*towers\.embed_dim=64"):
    moved_fields.check(cfg)


def test_an_older_config_reads_in_the_current_field_names(tmp_path):
  old = {"stage": "pretrain", "data": {"clip_length": 12, "clip_stride": 3, "max_text_len": 96},
         "towers": {"video": {"num_frames": 16, "image_size": 64, "num_outputs": 48},
                    "text": {"max_length": 512, "out_dim": 48}, "views": {"arch": "test"}}}
  (tmp_path / "config.json").write_text(json.dumps(old))
  cfg = RunFolder(str(tmp_path)).read_config("pretrain")
  # what that version ran with: its pretraining replaced num_frames by data.clip_length
  assert cfg.towers.video.num_frames == 12 and cfg.towers.video.clip_stride == 3
  assert cfg.towers.text.max_length == 96 and cfg.towers.embed_dim == 48
  assert "clip_length" not in cfg.data and "views" not in cfg.towers
  assert "num_outputs" not in cfg.towers.video and "out_dim" not in cfg.towers.text


def test_a_run_with_checkpoints_resumes_only_under_its_config(tmp_path):
  from echoprime_jax.run.folder import ConfigChanged
  cfg = pretrain_config.get_config("tiny")
  cfg.data.dir = "/archive/Smith_John/shards"
  run = RunFolder(str(tmp_path / "run"))
  run.write_config(cfg.to_dict())
  changed = pretrain_config.get_config("tiny")
  changed.data.dir = "/archive/Doe_Jane/shards"
  changed.optim.learning_rate = 1e-2
  changed.total_steps = 900
  run.check_resume(changed.to_dict())  # no checkpoint yet: nothing to protect
  (tmp_path / "run" / "checkpoints" / "50").mkdir(parents=True)
  run.check_resume(cfg.to_dict())  # the same config resumes
  with pytest.raises(ConfigChanged) as e:
    run.check_resume(changed.to_dict())
  msg = str(e.value)
  assert "optim.learning_rate 0.0003 -> 0.01" in msg and "total_steps 0 -> 900" in msg
  assert "data.dir <a path> -> <a path>" in msg and "Smith" not in msg and "Doe" not in msg
  assert "may change with --allow_safe_changes" in msg and "\n" not in msg
  with pytest.raises(ConfigChanged, match="optim.learning_rate") as e:
    run.check_resume(changed.to_dict(), allow_safe_changes=True)  # lr is not a safe field
  assert "total_steps" not in str(e.value)
  safe = pretrain_config.get_config("tiny")
  safe.data.dir, safe.total_steps, safe.log_every = cfg.data.dir, 900, 5
  run.check_resume(safe.to_dict(), allow_safe_changes=True)
  with pytest.raises(ConfigChanged, match="total_steps 0 -> 900"):
    run.check_resume(safe.to_dict())
