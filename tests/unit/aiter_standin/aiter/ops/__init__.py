"""aiter.ops, of which the stand-in provides groupnorm only."""
