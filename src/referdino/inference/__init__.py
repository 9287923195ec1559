"""Inference on whole videos: several expressions share the text-independent visual work."""
