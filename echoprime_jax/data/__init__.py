"""Input pipelines: shards -> clips, reports and studies for training and evaluation."""
