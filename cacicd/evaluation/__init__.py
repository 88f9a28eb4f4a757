"""Evaluation: metrics on arrays, thresholds, statistics, comparisons across models and folds."""
