"""Scenario definitions: GPU profiles (per-GPU, per-model tuned defaults) and run profiles."""
