"""Converters from other checkpoint layouts (official ReferDINO, official GroundingDINO, transformers)."""
