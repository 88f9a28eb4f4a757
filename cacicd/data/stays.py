"""Stay types (Table S9): their names, the MIMIC-III service codes that decide them, and the authors' rule."""
from __future__ import annotations

STAY_TYPES = ("newborn", "surgical", "medical", "unknown")
NEWBORN, SURGICAL, MEDICAL, UNKNOWN = STAY_TYPES

NEWBORN_SERVICES = ("NB", "NBB")
SURGICAL_SERVICES = ("CSURG", "NSURG", "ORTHO", "PSURG", "SURG", "TSURG", "VSURG", "TRAUM")


def stay_type_of(newborn: bool, surgical: bool, any_service: bool) -> str:
    """The authors' stay type from a stay's service rows: newborn > surgical > medical; none -> unknown."""
    return NEWBORN if newborn else SURGICAL if surgical else MEDICAL if any_service else UNKNOWN
