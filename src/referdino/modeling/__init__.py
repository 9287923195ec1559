"""ReferDINO model code: pure tensors in, tensors out (no I/O)."""
