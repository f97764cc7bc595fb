"""Retrieval-augmented interpretation: nearest-neighbour indexes, report labels, candidates."""
