"""cacicd: a runnable replication of Marcou et al. (2024), computer-assisted ICD-9-CM coding."""
__version__ = "0.1.0"
