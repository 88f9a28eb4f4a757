"""What exists only to reproduce the paper: analyses, runtime, claims, report, figure helpers, published values."""
