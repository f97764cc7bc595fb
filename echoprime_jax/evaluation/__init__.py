"""Evaluation of embeddings and figures: probes, zero-shot, bootstrap intervals."""
