"""The continued-pre-training harness behind `curate bench`."""
