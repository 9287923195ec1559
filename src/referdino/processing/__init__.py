"""Turning user inputs (sentences, frames) into model inputs, and model outputs into masks."""
