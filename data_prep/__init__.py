"""DICOM studies -> de-identified ArrayRecord shards (issue 3). NumPy/pydicom only, no JAX."""
