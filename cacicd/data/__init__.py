"""Data: sources (synthetic, OMOP folders, MIMIC-III, PostgreSQL) -> `Dataset`, its splits and description."""
