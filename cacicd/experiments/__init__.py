"""Experiments: the paper's experiments declared once, run by the engine, results cached."""
