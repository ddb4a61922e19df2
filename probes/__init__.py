"""Activation capture on real models: model aliases, shard reading, hook points, scoring."""
