"""Deterministic MIMIC-like OMOP CDM 5.3 generator: the embedded default data (no real patient data).

`write_omop(folder, n_stays, seed, fmt)` writes one file per table (`person`, `visit_occurrence`,
`visit_detail`, `drug_exposure`, `condition_occurrence`, `concept`, `concept_ancestor`) as
`<table>.csv` or `<table>.parquet`, with OMOP CDM 5.3 column names. Same seed and n_stays give
byte-identical files. Diagnoses are REAL ICD-9-CM leaf codes (2015 hierarchy, `cacicd.icd9`),
undotted in `condition_source_value` as in MIMIC-III; drugs are SYNTHETIC RxNorm-like clinical drugs
rolled up to synthetic ingredients through `concept_ancestor`. Concept ids of synthetic concepts
are in the OMOP local range (> 2,000,000,000).

CALIBRATED OUTPUTS: the only statistics the parameters were tuned to are listed in `CALIBRATED_TO` (the
replication report prints them); none of them is evidence for or against a claim of the paper.

Calibration (spec section 14): at 58,976 stays the codes per stay after roll-up, the stay-type mix
(newborn ~14 %, surgical ~41 %, medical ~45 %), the share of stays without a written prescription
(~15 %), the distinct ingredients per stay (~35) and the ages (4 % shifted to ~300 years, as MIMIC
does for patients over 89) resemble MIMIC-III. Measured at 58,976 stays, seed 0, version 2 (after roll-up,
mean codes per stay, MIMIC in brackets): chapter 5.69 (5.77), subchapter 8.10 (8.10), 3-digit 10.37 (10.18),
4-digit 10.53 (10.48), 5-digit 5.17 (5.02), billing 8.81, median 8 (9.13, 8), all 39.8, median 36 (39.5, 34);
distinct billing 5,686 (5,871), all 9,565 (9,336); 84.8 % stays with a written prescription, 34.7
ingredients per such stay, 1,209 ingredients (1,164). Checked in `tests/test_synthetic.py`.

PLANTED SIGNAL (what a model can and cannot learn), all drawn from the seed only (the "world",
independent of n_stays) and returned by `planted_signal(seed)`:

* Latent problems: `N_PROBLEMS` adult problems and `N_NEWBORN_PROBLEMS` newborn problems. Each has
  a home chapter, a Zipf-weighted set of leaf codes (mostly in its home chapter) and a set of
  ingredients with prescription probabilities. A stay draws 1 + Poisson(lambda) problems (more for
  older and surgical stays; surgical stays favour "surgical" problems; stays of one person often
  share a chronic problem), emits codes from each problem and is prescribed each problem
  ingredient with its probability, plus background drugs (independent of problems) and a little
  random noise.
* Signal codes (`code_class == "signal"`): leaves that belong to at least one problem; their
  presence depends on the problems and hence on the prescribed ingredients.
* Drug-linked codes (`code_class == "drug_linked"`, `DRUG_LINKED_CODES`): E and V codes whose meaning
  implies a drug: V58.61 long-term anticoagulant use, V58.67 insulin, V45.81 aortocoronary bypass status
  (statins), the other V58.6x long-term uses, V58.11 chemotherapy, V45.82, V42.0, V12.51, and E930-E949
  adverse effects of drug classes (E934.2 anticoagulants, E932.3 insulins, E933.1 antineoplastics, ...).
  Each belongs to a drug class (`DRUG_CLASSES`: synthetic ingredients of problems of related chapters
  and/or background drugs); an adult stay gets the code with one probability when it is prescribed a
  drug of the class, a lower one otherwise: the prescription carries the signal, as in MIMIC-III.
* No-signal codes (`code_class == "no_signal"`): every other E and V leaf except V30-V39 and a random
  `SIGNAL_EV_FRACTION` of the others, plus a random `NOSIGNAL_BILLING_FRACTION` of the billing
  leaves. They are drawn for every stay independently of everything else (Poisson number, fixed
  marginal Zipf frequencies): no feature (drugs, age, sex) carries information on them. Documented
  share (seed 0): 34 % of the leaves the generator can emit (2,791 of 8,147), 96 % of the E and V
  leaves outside V30-V39 (1,028 of 1,071), 25 % of the other leaves.
* Newborn liveborn codes V30-V39 (`code_class == "newborn"`): one per newborn stay, informative
  through age 0 only.
* Every diagnosis code is a leaf of the 2015 hierarchy, so the loader's warning about codes unknown
  to ICD-9-CM is left to real data (version 2 gave 3 in 10,000 (stay, code) pairs a stray trailing
  "0": 4 stays of 1,000, 19 of 7,000, 192 of 58,976 (seed 0) now carry the leaf itself);
  `N_NO_DIAGNOSIS_PAPER` stays (scaled) have no diagnosis at all.
* ETL facts reproduced: one ICD-9 code maps to 1-3 standard "SNOMED-like" concepts, so condition
  rows repeat per (visit, code); drug rows of type 38000180 (inpatient administration, ICU-like
  infusions) mix with prescriptions (38000177); some rows have drug_concept_id 0; some rows point
  at an ingredient concept directly; repeated prescriptions of one drug in a stay are normal.

Stay type is carried by `visit_detail.visit_detail_source_value` (a MIMIC-III service code):
NB/NBB newborn; CSURG NSURG ORTHO PSURG SURG TSURG VSURG TRAUM surgical; others medical.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from cacicd import icd9
from cacicd.config import PAPER_STAYS, cache_root
from cacicd.data.omop.schema import FEMALE, MALE, PRESCRIPTION_WRITTEN
from cacicd.data.stays import NEWBORN_SERVICES, SURGICAL_SERVICES
from cacicd.files import check_files, created_mode, file_lock, record_files

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 3
TABLES: tuple[str, ...] = (
    "person", "visit_occurrence", "visit_detail", "drug_exposure",
    "condition_occurrence", "concept", "concept_ancestor",
)
FORMATS = ("csv", "parquet")

# OMOP standard concept ids used in the files (besides FEMALE, MALE, PRESCRIPTION_WRITTEN of the loader)
INPATIENT_VISIT = 9201
VISIT_TYPE_EHR = 44818518
INPATIENT_ADMINISTRATION = 38000180
CONDITION_TYPE_PRIMARY, CONDITION_TYPE_SECONDARY = 38000200, 38000201
LOCAL = 2_000_000_000  # OMOP local concept range
INGREDIENT_BASE, DRUG_BASE, SNOMED_BASE, ICD9_BASE = LOCAL + 100_000, LOCAL + 200_000, LOCAL + 400_000, LOCAL + 700_000

MEDICAL_SERVICES = ("MED", "CMED", "NMED", "OMED", "GU", "ENT", "GYN", "OBS", "DENT", "PSYCH")

CALIBRATED_TO: tuple[str, ...] = (
    "MIMIC-III figures of spec section 14: codes per stay per level, codes present per level, stay-type mix, "
    "stays with a written prescription, ingredients per stay, ages, stays of repeat patients",
    "the open MIMIC-III demo (129 adult admissions: wide uncertainty), for the drug-linked codes: "
    "P(V58.61 | warfarin) 11/32 = 0.34 and without 7/97 = 0.07, P(V58.67 | insulin) 8/90 = 0.09 and without 0/39, "
    "P(V45.81 | a statin) 7/50 = 0.14 and without 2/79 = 0.025 (measured on 20,000 synthetic adult stays: "
    "0.34 / 0.07, 0.09 / 0.002, 0.14 / 0.03)",
    "generator version 1's E and V codes per stay (1.90; version 2: 1.92), kept by lowering the no-signal draws "
    "by what the drug-linked codes add",
)
NOT_CALIBRATED: tuple[str, ...] = (  # reported for comparison only
    "adult stays with an E930-E949 code: 13.5 % (demo 13/129 = 10 %)",
    "E and V codes among the diagnoses: 18 % of (stay, code) pairs (demo 11 % of rows, adults only)",
)

# calibration constants (MIMIC-III, spec section 14)
P_NEWBORN, P_SURGICAL = 8_096 / PAPER_STAYS, 23_947 / PAPER_STAYS
P_MULTI_STAY = 19_993 / PAPER_STAYS
N_NO_DIAGNOSIS_PAPER = 47  # of the paper's PAPER_STAYS stays
N_PROBLEMS, N_NEWBORN_PROBLEMS = 400, 16
N_INGREDIENTS = 1_240
NOSIGNAL_BILLING_FRACTION = 0.15
F_SUBCHAPTER = 0.45  # share of a problem's home-chapter codes taken from its home subchapter
SIGNAL_EV_FRACTION = 0.10
UNUSED_EV_FRACTION = 0.5
NOSIG_RATE = 2.37  # no-signal codes drawn per stay (Poisson), before duplicates (2.6 before the drug-linked codes)
NOSIG_SHARES = (0.24, 0.435, 0.325)  # of those: E, V, billing codes (E and V scaled down by the drug-linked ones)
P_NO_DRUG_NEWBORN, P_NO_DRUG_OTHER = 0.50, 0.095

# Drug classes: synthetic ingredients drawn from the problems of some home chapters (prescribed with them) and
# from the adult background drugs (prescribed independently, e.g. sliding-scale insulin, opioids, sedatives).
DRUG_CLASSES: dict[str, tuple[int, tuple[str, ...], int]] = {  # name -> (from problems, their chapters, from background)
    "anticoagulant": (3, ("390-459",), 0), "antiplatelet": (2, ("390-459",), 0), "statin": (1, ("390-459",), 1),
    "cardiovascular": (3, ("390-459",), 0), "aspirin": (0, (), 1), "diuretic": (2, ("390-459", "580-629"), 0),
    "insulin": (0, (), 1), "steroid": (2, ("460-519", "710-739"), 0), "nsaid": (2, ("710-739",), 0),
    "antibiotic": (4, ("001-139", "460-519", "580-629"), 1), "antineoplastic": (3, ("140-239",), 0),
    "immunosuppressant": (2, ("580-629", "710-739"), 0), "anticonvulsant": (2, ("320-389",), 0),
    "psychotropic": (3, ("290-319",), 0), "gi_agent": (1, ("520-579",), 1), "bronchodilator": (2, ("460-519",), 0),
    "opioid": (0, (), 3), "sedative": (0, (), 2),
}
# (code, drug class, P(code | a drug of the class is prescribed), P(code | none)), adult stays only. The first
# three are calibrated to the open MIMIC-III demo (see the module docstring); the others are set from their
# meaning at rates that put the share of adult stays with an E930-E949 code near the demo's.
DRUG_LINKED_CODES: tuple[tuple[str, str, float, float], ...] = (
    ("V5861", "anticoagulant", 0.34, 0.07), ("V5867", "insulin", 0.09, 0.002), ("V4581", "statin", 0.14, 0.025),
    ("V5863", "antiplatelet", 0.06, 0.002), ("V5865", "steroid", 0.05, 0.002), ("V5866", "aspirin", 0.05, 0.002),
    ("V5864", "nsaid", 0.03, 0.001), ("V5862", "antibiotic", 0.02, 0.001), ("V5811", "antineoplastic", 0.20, 0.001),
    ("V4582", "antiplatelet", 0.08, 0.003), ("V420", "immunosuppressant", 0.30, 0.001),
    ("V1251", "anticoagulant", 0.05, 0.005),
    ("E9342", "anticoagulant", 0.04, 0.001), ("E9320", "steroid", 0.03, 0.0005), ("E9323", "insulin", 0.02, 0.0005),
    ("E9331", "antineoplastic", 0.12, 0.0005), ("E9305", "antibiotic", 0.01, 0.0003),
    ("E9308", "antibiotic", 0.01, 0.0003), ("E9352", "opioid", 0.02, 0.0005), ("E9361", "anticonvulsant", 0.03, 0.0003),
    ("E9378", "sedative", 0.01, 0.0003), ("E9393", "psychotropic", 0.02, 0.0003),
    ("E9420", "cardiovascular", 0.02, 0.0003), ("E9421", "cardiovascular", 0.02, 0.0003),
    ("E9426", "cardiovascular", 0.01, 0.0003), ("E9443", "diuretic", 0.02, 0.0005), ("E9356", "nsaid", 0.01, 0.0003),
    ("E9353", "aspirin", 0.01, 0.0003), ("E9430", "gi_agent", 0.005, 0.0002), ("E9457", "bronchodilator", 0.01, 0.0003),
)

_CHAPTER_WEIGHTS = {  # home chapters of adult problems (rough MIMIC-III diagnosis mix)
    "001-139": 0.05, "140-239": 0.05, "240-279": 0.11, "280-289": 0.04, "290-319": 0.05,
    "320-389": 0.05, "390-459": 0.22, "460-519": 0.08, "520-579": 0.08, "580-629": 0.06,
    "630-679": 0.01, "680-709": 0.02, "710-739": 0.04, "740-759": 0.01, "780-799": 0.05,
    "800-999": 0.08,
}
_LEVEL_FACTOR = {"3digit": 1.0, "4digit": 1.5, "5digit": 1.45}  # leaf popularity by level
_SYLLABLES = ("ba", "cor", "da", "fen", "gli", "ho", "lix", "ma", "nor", "pra", "qui", "ro", "sal",
              "te", "vo", "xa", "zen", "tri", "mel", "cal", "dor", "pin", "ste", "lu")
_SUFFIXES = ("mab", "pril", "olol", "azole", "cillin", "statin", "sartan", "dipine", "oxacin",
             "ine", "ide", "one", "ate", "ium", "mycin", "vir", "parin", "afil", "tidine", "lam")


@dataclass(frozen=True)
class Problem:
    """A latent clinical problem: codes (leaf indices) and ingredients with probabilities."""

    codes: np.ndarray  # (k,) int, index into World.leaves
    code_p: np.ndarray  # (k,) float, sums to 1
    ingredients: np.ndarray  # (m,) int, index into World.ingredient_names
    ingredient_p: np.ndarray  # (m,) float, prescription probability per stay
    chapter: str
    newborn: bool


@dataclass(frozen=True)
class World:
    """Everything drawn from the seed alone: codes, problems, ingredients, drugs."""

    leaves: np.ndarray  # (L,) str, every ICD-9-CM leaf
    code_class: np.ndarray  # (L,) str: signal, drug_linked, no_signal, newborn, unused
    n_snomed: np.ndarray  # (L,) int, standard concepts per code (1-3)
    problems: tuple[Problem, ...]
    pop_medical: np.ndarray  # (P,) problem popularity, medical stays (0 for newborn problems)
    pop_surgical: np.ndarray  # (P,) problem popularity, surgical stays
    pop_newborn: np.ndarray  # (P,) problem popularity, newborn stays
    nosig_codes: np.ndarray  # (n,) int leaf indices
    nosig_p: np.ndarray  # (n,) marginal probabilities
    liveborn_codes: np.ndarray  # int leaf indices under V30-V39
    liveborn_p: np.ndarray
    ingredient_names: np.ndarray  # (I,) str
    ingredient_pop: np.ndarray  # (I,) noise popularity
    background: dict  # stay type -> (ingredient indices, probabilities)
    infusion: np.ndarray  # ingredient indices given as ICU infusions (type 38000180)
    drug_names: np.ndarray  # (D,) str
    drug_ingredients: tuple[tuple[int, ...], ...]  # (D,) ingredient indices
    single_start: np.ndarray  # (I,) first single-ingredient drug of each ingredient
    single_count: np.ndarray  # (I,)
    combo_of: tuple[tuple[int, ...], ...]  # (I,) combination drugs containing the ingredient
    class_ingredients: tuple[np.ndarray, ...]  # per DRUG_CLASSES entry, its ingredient indices
    linked_codes: np.ndarray  # (m,) leaf indices of DRUG_LINKED_CODES
    linked_class: np.ndarray  # (m,) index into DRUG_CLASSES
    linked_p: np.ndarray  # (m, 2) P(code | class drug), P(code | none)


def _zipf(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) Zipf weights rank^-s in random order, normalised to 1."""
    w = np.arange(1, n + 1, dtype=float) ** -s
    w = w[rng.permutation(n)]
    return w / w.sum()


def _names(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) unique synthetic ingredient names."""
    seen: set[str] = set()
    out = []
    while len(out) < n:
        k = rng.integers(2, 4)
        name = "".join(rng.choice(_SYLLABLES, size=k)) + rng.choice(_SUFFIXES)
        if name not in seen:
            seen.add(name)
            out.append(name)
    return np.array(out, dtype=object)


@functools.lru_cache(maxsize=1)
def _leaves() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(leaves, chapter, subchapter and level of each leaf) over the ICD-9-CM hierarchy."""
    codes = icd9.all_codes()
    parents = {icd9.parent(c) for c in codes}
    leaves = np.array([c for c in codes if c not in parents], dtype=object)
    chapter = np.array([icd9.ancestors(c)[-1] for c in leaves], dtype=object)
    sub = np.array([icd9.ancestors(c)[-2] if len(icd9.ancestors(c)) > 1 else c for c in leaves], dtype=object)
    lvl = np.array([icd9.level(c) for c in leaves], dtype=object)
    return leaves, chapter, sub, lvl


@functools.lru_cache(maxsize=4)
def build_world(seed: int = 0) -> World:
    """The latent structure of the synthetic data, drawn from `seed` only."""
    rng = np.random.default_rng([seed, 1])
    leaves, chapter, subchapter, lvl = _leaves()
    n_leaf = len(leaves)
    is_ev = np.array([c[0] in "EV" for c in leaves])
    is_e = np.array([c[0] == "E" for c in leaves])
    liveborn = np.array([c.startswith(("V3",)) and c[:3] in {f"V{k}" for k in range(30, 40)} for c in leaves])
    perinatal = chapter == "760-779"
    level_factor = np.array([_LEVEL_FACTOR[x] for x in lvl])
    # global popularity: Zipf by random rank inside each chapter, scaled by level
    pop = np.zeros(n_leaf)
    for ch in np.unique(chapter):
        idx = np.flatnonzero(chapter == ch)
        pop[idx] = _zipf(len(idx), {"E000-E999": 1.3, "V01-V91": 1.05}.get(ch, 0.9), rng)
    pop *= level_factor

    klass = np.full(n_leaf, "signal", dtype=object)
    u = rng.random(n_leaf)
    klass[is_ev & (u >= SIGNAL_EV_FRACTION)] = "no_signal"
    klass[~is_ev & (u < NOSIGNAL_BILLING_FRACTION)] = "no_signal"
    klass[is_ev & (rng.random(n_leaf) < UNUSED_EV_FRACTION)] = "unused"  # MIMIC uses few E/V codes
    klass[liveborn] = "newborn"
    klass[perinatal] = "signal"  # perinatal codes come from newborn problems
    signal_pool = klass == "signal"

    ingredient_names = _names(N_INGREDIENTS, rng)
    ing_rank = rng.permutation(N_INGREDIENTS)  # ingredient i has popularity rank ing_rank[i]
    order = np.argsort(ing_rank)  # order[r] = ingredient of rank r
    n_bg = 110
    bg_adult = order[:n_bg]
    bg_p = 0.66 * np.exp(-np.arange(n_bg) / 24.0)
    bg_surg = order[n_bg:n_bg + 12]
    nb_bg = order[n_bg + 12:n_bg + 18]
    pool = order[n_bg + 18:]  # problem ingredients
    pool_w = np.arange(1, len(pool) + 1, dtype=float) ** -0.5
    pool_w /= pool_w.sum()
    infusion = np.concatenate([bg_adult[:12], pool[-10:]])

    problems = []
    chapters = list(_CHAPTER_WEIGHTS)
    ch_w = np.array(list(_CHAPTER_WEIGHTS.values()))
    ch_w /= ch_w.sum()
    for p in range(N_PROBLEMS + N_NEWBORN_PROBLEMS):
        newborn = p >= N_PROBLEMS
        if newborn:
            home = "760-779"
            home_mask = signal_pool & (perinatal | (chapter == "740-759") | (chapter == "V01-V91"))
            other_mask = signal_pool & perinatal
            n_codes, f_home = int(rng.integers(6, 30)), 1.0
        else:
            home = chapters[rng.choice(len(chapters), p=ch_w)]
            home_mask = signal_pool & (chapter == home)
            other_mask = signal_pool & ~perinatal
            n_codes, f_home = int(rng.integers(10, 80)), 0.85
        # a problem centres on one subchapter of its home chapter, then the chapter, then anywhere
        home_idx = np.flatnonzero(home_mask)
        sub_w = {}
        for i in home_idx:
            sub_w[subchapter[i]] = sub_w.get(subchapter[i], 0.0) + pop[i]
        subs = sorted(sub_w)
        sw = np.array([sub_w[x] for x in subs])
        home_sub = subs[rng.choice(len(subs), p=sw / sw.sum())]
        in_sub = home_mask & (subchapter == home_sub)
        n_sub = int(round(n_codes * f_home * F_SUBCHAPTER))
        n_home = max(1, int(round(n_codes * f_home)) - n_sub)
        picks = []
        for mask, k in ((in_sub, n_sub), (home_mask & ~in_sub, n_home), (other_mask, n_codes - n_home - n_sub)):
            idx = np.flatnonzero(mask)
            if k > 0 and len(idx):
                w = pop[idx] / pop[idx].sum()
                picks.append(rng.choice(idx, size=min(k, len(idx)), replace=False, p=w))
        codes = np.unique(np.concatenate(picks))
        cw = pop[codes] * rng.lognormal(0, 0.5, len(codes)) * np.where(in_sub[codes], 2.0, 1.0)
        cw = cw / cw.sum()
        n_ing = int(rng.integers(3, 8)) if newborn else int(rng.integers(4, 16))
        ings = rng.choice(pool, size=n_ing, replace=False, p=pool_w)
        ip = np.sort(rng.uniform(0.2, 0.9, n_ing))[::-1] * (0.6 if newborn else 1.0)
        problems.append(Problem(codes, cw, ings, ip, home, newborn))

    adult_pop = _zipf(N_PROBLEMS, 0.9, rng)
    affinity = rng.lognormal(0, 0.8, N_PROBLEMS)
    affinity[np.isin([pr.chapter for pr in problems[:N_PROBLEMS]], ["800-999", "710-739", "390-459"])] *= 2.0
    zeros_nb = np.zeros(N_NEWBORN_PROBLEMS)
    pop_med = np.concatenate([adult_pop / affinity, zeros_nb])
    pop_surg = np.concatenate([adult_pop * affinity, zeros_nb])
    pop_nb = np.concatenate([np.zeros(N_PROBLEMS), _zipf(N_NEWBORN_PROBLEMS, 1.0, rng)])

    class_ings, linked, linked_class, linked_p = _drug_links(leaves, problems, bg_adult, seed)
    klass[linked] = "drug_linked"
    nosig = np.flatnonzero(klass == "no_signal")
    group = np.select([is_e[nosig], is_ev[nosig]], [0, 1], 2)  # E, V, billing
    nosig_p = np.zeros(len(nosig))
    for g, share in enumerate(NOSIG_SHARES):
        m = group == g
        nosig_p[m] = share * pop[nosig][m] / pop[nosig][m].sum()
    live = np.flatnonzero(liveborn)
    live_p = np.array([{"V3000": 60.0, "V3001": 30.0, "V3101": 3.0, "V3100": 2.0}.get(leaves[i], 0.05) for i in live])
    live_p /= live_p.sum()
    klass[(klass == "signal") & ~np.isin(np.arange(n_leaf), np.concatenate([pr.codes for pr in problems]))] = "unused"

    # drugs: 1-3 single-ingredient clinical drugs per ingredient, combinations inside problems
    forms = ("Oral Tablet", "Injectable Solution", "Oral Capsule", "Topical Cream", "Oral Solution")
    drug_names, drug_ings = [], []
    n_single = rng.integers(1, 4, N_INGREDIENTS)
    single_start = np.zeros(N_INGREDIENTS, dtype=np.int64)
    for i in range(N_INGREDIENTS):
        single_start[i] = len(drug_names)
        for _ in range(n_single[i]):
            dose = int(rng.choice([1, 2, 5, 10, 20, 25, 50, 100, 250, 500]))
            drug_names.append(f"{ingredient_names[i]} {dose} MG {forms[rng.integers(len(forms))]}")
            drug_ings.append((i,))
    combo_of: list[list[int]] = [[] for _ in range(N_INGREDIENTS)]
    seen_pairs: set[tuple[int, int]] = set()
    for pr in rng.choice(N_PROBLEMS, size=260):
        ings = problems[pr].ingredients
        a, b = sorted(int(x) for x in rng.choice(ings, size=2, replace=False))
        if (a, b) in seen_pairs:
            continue
        seen_pairs.add((a, b))
        combo_of[a].append(len(drug_names))
        combo_of[b].append(len(drug_names))
        drug_names.append(f"{ingredient_names[a]} 10 MG / {ingredient_names[b]} 5 MG Oral Tablet")
        drug_ings.append((a, b))
    return World(
        leaves=leaves, code_class=klass, n_snomed=rng.choice([1, 2, 3], size=n_leaf, p=[0.8, 0.15, 0.05]),
        problems=tuple(problems), pop_medical=pop_med / pop_med.sum(), pop_surgical=pop_surg / pop_surg.sum(),
        pop_newborn=pop_nb / pop_nb.sum(), nosig_codes=nosig, nosig_p=nosig_p, liveborn_codes=live,
        liveborn_p=live_p, ingredient_names=ingredient_names,
        ingredient_pop=(np.arange(1, N_INGREDIENTS + 1, dtype=float) ** -1.5)[ing_rank],
        background={"adult": (bg_adult, bg_p), "surgical": (bg_surg, np.full(len(bg_surg), 0.45)),
                    "newborn": (nb_bg, np.array([0.8, 0.6, 0.5, 0.3, 0.2, 0.1]))},
        infusion=infusion, drug_names=np.array(drug_names, dtype=object), drug_ingredients=tuple(drug_ings),
        single_start=single_start, single_count=n_single.astype(np.int64),
        combo_of=tuple(tuple(c) for c in combo_of), class_ingredients=class_ings, linked_codes=linked,
        linked_class=linked_class, linked_p=linked_p,
    )


def _drug_links(leaves: np.ndarray, problems, bg_adult: np.ndarray, seed: int):
    """Ingredients of each DRUG_CLASSES entry and the leaf index, class and probabilities of DRUG_LINKED_CODES."""
    rng = np.random.default_rng([seed, 3])  # its own stream: the rest of the world does not move
    names = list(DRUG_CLASSES)
    taken: set[int] = set()
    class_ings = []
    background = [int(i) for i in bg_adult[5:60]]  # prescribed to 5-54 % of adult stays
    for name in names:
        k_prob, homes, k_bg = DRUG_CLASSES[name]
        pick = []
        for k, cand in ((k_prob, sorted({int(i) for p in problems if not p.newborn and p.chapter in homes
                                         for i in p.ingredients})), (k_bg, background)):
            cand = [i for i in cand if i not in taken]
            if k and cand:
                got = rng.choice(cand, size=min(k, len(cand)), replace=False)
                taken.update(int(i) for i in got)
                pick.extend(int(i) for i in got)
        class_ings.append(np.array(sorted(pick), dtype=np.int64))
    index = {c: i for i, c in enumerate(leaves)}
    missing = [c for c, *_ in DRUG_LINKED_CODES if c not in index]
    if missing:
        raise ValueError(f"DRUG_LINKED_CODES holds codes that are not ICD-9-CM leaves: {missing}")
    linked = np.array([index[c] for c, *_ in DRUG_LINKED_CODES], dtype=np.int64)
    linked_class = np.array([names.index(k) for _, k, _, _ in DRUG_LINKED_CODES], dtype=np.int64)
    linked_p = np.array([(a, b) for _, _, a, b in DRUG_LINKED_CODES], dtype=np.float64)
    return tuple(class_ings), linked, linked_class, linked_p


def planted_signal(seed: int = 0) -> dict:
    """What the generator plants: code classes, problems (codes and ingredients), ingredient ids.

    Keys: "signal_codes", "drug_linked_codes", "no_signal_codes", "newborn_codes" (sorted lists of
    undotted codes), "code_class" (code -> class), "problems" (list of dicts: chapter, newborn, codes,
    code_p, ingredients (concept ids), ingredient_names, ingredient_p), "drug_links" (code -> class,
    ingredients (concept ids), p_with, p_without), "drug_classes" (class -> ingredient concept ids),
    "ingredient_ids" (name -> concept id).
    """
    w = build_world(seed)
    cls = {str(c): str(k) for c, k in zip(w.leaves, w.code_class) if k != "unused"}
    probs = [
        {
            "chapter": p.chapter, "newborn": p.newborn,
            "codes": [str(w.leaves[i]) for i in p.codes], "code_p": p.code_p.tolist(),
            "ingredients": [INGREDIENT_BASE + int(i) for i in p.ingredients],
            "ingredient_names": [str(w.ingredient_names[i]) for i in p.ingredients],
            "ingredient_p": p.ingredient_p.tolist(),
        }
        for p in w.problems
    ]
    classes = list(DRUG_CLASSES)
    drug_classes = {name: [INGREDIENT_BASE + int(i) for i in ings] for name, ings in zip(classes, w.class_ingredients)}
    links = {str(w.leaves[i]): {"class": classes[k], "ingredients": drug_classes[classes[k]], "p_with": float(pw),
                                "p_without": float(po)}
             for i, k, (pw, po) in zip(w.linked_codes, w.linked_class, w.linked_p)}
    return {
        "signal_codes": sorted(c for c, k in cls.items() if k == "signal"),
        "drug_linked_codes": sorted(links),
        "drug_links": links,
        "drug_classes": drug_classes,
        "no_signal_codes": sorted(c for c, k in cls.items() if k == "no_signal"),
        "newborn_codes": sorted(c for c, k in cls.items() if k == "newborn"),
        "code_class": cls,
        "problems": probs,
        "ingredient_ids": {str(n): INGREDIENT_BASE + i for i, n in enumerate(w.ingredient_names)},
    }


def _segments(counts: np.ndarray) -> np.ndarray:
    """(sum(counts),) owner index of each item when item counts per owner are `counts`."""
    return np.repeat(np.arange(len(counts)), counts)


def _persons(n: int, is_newborn: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) person index of each stay; about P_MULTI_STAY of stays belong to repeat patients."""
    adults = np.flatnonzero(~is_newborn)
    target = min(int(round(P_MULTI_STAY * n)), len(adults))
    sizes = []
    total = 0
    while total < target:
        k = int(min(1 + rng.geometric(1 / 1.65), 12))
        k = min(k, target - total) if target - total >= 2 else 0
        if k < 2:
            break
        sizes.append(k)
        total += k
    person = np.empty(n, dtype=np.int64)
    perm = rng.permutation(adults)
    multi_stays, single_adults = perm[:total], perm[total:]
    person[multi_stays] = _segments(np.array(sizes, dtype=np.int64))
    n_multi_persons = len(sizes)
    singles = np.concatenate([single_adults, np.flatnonzero(is_newborn)])
    singles.sort()
    person[singles] = n_multi_persons + np.arange(len(singles))
    return person


def _draw_codes(world: World, probs: np.ndarray, stay: np.ndarray, per_pair: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Codes and ingredients of (stay, problem) pairs: (code_stay, code_leaf, ing_stay, ing_index)."""
    cs, cl, is_, ii = [], [], [], []
    order = np.argsort(probs, kind="stable")
    bounds = np.searchsorted(probs[order], np.arange(len(world.problems) + 1))
    for p in tqdm(range(len(world.problems)), desc="problems", leave=False, disable=len(stay) < 200_000):
        sel = order[bounds[p]:bounds[p + 1]]
        if len(sel) == 0:
            continue
        pr = world.problems[p]
        k = per_pair[sel]
        cs.append(np.repeat(stay[sel], k))
        cl.append(rng.choice(pr.codes, size=int(k.sum()), p=pr.code_p))
        hit = rng.random((len(sel), len(pr.ingredients))) < pr.ingredient_p
        r, c = np.nonzero(hit)
        is_.append(stay[sel][r])
        ii.append(pr.ingredients[c])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(cs), cat(cl), cat(is_), cat(ii)


def _stays(n: int, seed: int) -> dict:
    """All rows of the synthetic data as numpy arrays (see `write_omop` for the tables)."""
    if n < 1:
        raise ValueError(f"n_stays must be >= 1, got {n}")
    w = build_world(seed)
    rng = np.random.default_rng([seed, 2, n])
    # stay types and persons
    u = rng.random(n)
    stype = np.where(u < P_NEWBORN, 0, np.where(u < P_NEWBORN + P_SURGICAL, 1, 2))  # 0 nb, 1 surg, 2 med
    newborn = stype == 0
    person = _persons(n, newborn, rng)
    n_person = int(person.max()) + 1
    # person attributes: sex, age at first stay (years), first admission day
    female = rng.random(n_person) < 0.425
    first_stay = np.full(n_person, n, dtype=np.int64)
    np.minimum.at(first_stay, person, np.arange(n))
    p_newborn = newborn[first_stay]
    female[p_newborn] = rng.random(p_newborn.sum()) < 0.46
    bins = rng.choice(4, size=n_person, p=np.array([4, 33, 45, 4.0 * 100 / 86]) / (82 + 4.0 * 100 / 86))
    lo = np.array([16.0, 31.0, 62.0, 300.0])[bins]
    hi = np.array([31.0, 62.0, 89.5, 301.0])[bins]
    age0 = np.where(p_newborn, 0.0, rng.uniform(lo, hi))
    # dates: each person's stays follow each other in time
    order = np.lexsort((np.arange(n), person))
    los = 1 + rng.geometric(1 / 8.0, size=n)
    los[newborn] = 1 + rng.geometric(1 / 4.0, size=newborn.sum())
    gap = rng.geometric(1 / 300.0, size=n)
    day0 = rng.integers(0, 36_500, n_person)  # days after 2100-01-01
    start = np.empty(n, dtype=np.int64)
    cum = np.cumsum(los[order] + gap[order])
    person_sorted = person[order]
    first_pos = np.searchsorted(person_sorted, person_sorted)
    before = cum - (los[order] + gap[order])
    start[order] = day0[person_sorted] + before - before[first_pos]
    birth = day0 - np.round(age0 * 365.25).astype(np.int64) - rng.integers(0, 30, n_person) * (~p_newborn)
    age = (start - birth[person]) / 365.25
    clipped = np.clip(age, 0, 89) / 89

    # problems per stay
    frailty = rng.gamma(2.5, 0.4, n)  # overdispersion: some stays are far more complex
    lam = np.where(newborn, 1.0, (1.35 + 1.3 * clipped + 0.6 * (stype == 1)) * frailty)
    n_prob = np.where(newborn, rng.poisson(lam), 1 + rng.poisson(lam))
    pair_stay = _segments(n_prob)
    pair_prob = np.empty(len(pair_stay), dtype=np.int64)
    for t, pop in ((0, w.pop_newborn), (1, w.pop_surgical), (2, w.pop_medical)):
        m = stype[pair_stay] == t
        pair_prob[m] = rng.choice(len(pop), size=int(m.sum()), p=pop)
    # chronic problem shared by the stays of one person (first problem slot, 60 %)
    chronic = rng.choice(len(w.pop_medical), size=n_person, p=w.pop_medical)
    first_slot = np.r_[True, pair_stay[1:] != pair_stay[:-1]]
    repl = first_slot & ~newborn[pair_stay] & (rng.random(len(pair_stay)) < 0.6)
    pair_prob[repl] = chronic[person[pair_stay[repl]]]
    per_pair = 1 + rng.poisson(np.where(newborn[pair_stay], 0.8, 2.5))
    cs, cl, ps, pi = _draw_codes(w, pair_prob, pair_stay, per_pair, rng)
    # no-signal codes (independent of everything), liveborn codes
    n_ns = rng.poisson(NOSIG_RATE, n)
    ns_stay = _segments(n_ns)
    ns_code = w.nosig_codes[rng.choice(len(w.nosig_codes), size=len(ns_stay), p=w.nosig_p)]
    nb = np.flatnonzero(newborn)
    lb_code = w.liveborn_codes[rng.choice(len(w.liveborn_codes), size=len(nb), p=w.liveborn_p)]
    code_stay = np.concatenate([nb, cs, ns_stay])
    code_leaf = np.concatenate([lb_code, cl, ns_code])
    key = np.unique(code_stay * len(w.leaves) + code_leaf)  # distinct (stay, code), sorted by stay
    code_stay, code_leaf = key // len(w.leaves), key % len(w.leaves)
    n_nodx = max(1, int(round(n * N_NO_DIAGNOSIS_PAPER / PAPER_STAYS)))
    nodx = rng.choice(n, size=n_nodx, replace=False)
    keep = ~np.isin(code_stay, nodx)
    code_stay, code_leaf = code_stay[keep], code_leaf[keep]
    rng.random(len(code_stay))  # version 2 drew its invalid codes here: kept, so every later draw is the same

    # ingredients: background + problems + noise; written prescriptions
    ing_stay, ing_idx = [ps], [pi]
    for kind, mask in (("adult", ~newborn), ("surgical", stype == 1), ("newborn", newborn)):
        idx, p = w.background[kind]
        rows = np.flatnonzero(mask)
        r, c = np.nonzero(rng.random((len(rows), len(idx))) < p)
        ing_stay.append(rows[r])
        ing_idx.append(idx[c])
    n_noise = rng.poisson(np.where(newborn, 0.1, 2.0))
    noise_stay = _segments(n_noise)
    ing_stay.append(noise_stay)
    ing_idx.append(rng.choice(N_INGREDIENTS, size=len(noise_stay), p=w.ingredient_pop / w.ingredient_pop.sum()))
    ing_stay.append(nb)  # every newborn with drugs gets at least the first newborn drug
    ing_idx.append(np.full(len(nb), w.background["newborn"][0][0]))
    key = np.unique(np.concatenate(ing_stay) * N_INGREDIENTS + np.concatenate(ing_idx))
    ing_stay, ing_idx = key // N_INGREDIENTS, key % N_INGREDIENTS
    no_drug = rng.random(n) < np.where(newborn, P_NO_DRUG_NEWBORN, P_NO_DRUG_OTHER)
    keep = ~no_drug[ing_stay]
    ing_stay, ing_idx = ing_stay[keep], ing_idx[keep]
    code_stay, code_leaf = _add_drug_linked(w, n, newborn, nodx, ing_stay, ing_idx, code_stay, code_leaf,
                                            np.random.default_rng([seed, 4, n]))
    return dict(
        n=n, stype=stype, person=person, female=female, birth=birth, start=start, los=los,
        code_stay=code_stay, code_leaf=code_leaf, ing_stay=ing_stay, ing_idx=ing_idx,
        rng=rng, world=w,
    )


def _add_drug_linked(w: World, n: int, newborn: np.ndarray, nodx: np.ndarray, ing_stay: np.ndarray,
                     ing_idx: np.ndarray, code_stay: np.ndarray, code_leaf: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The stays' codes plus the drug-linked E/V codes their prescriptions imply (adult stays with a diagnosis)."""
    owner = np.full(N_INGREDIENTS, -1, dtype=np.int64)
    for k, ings in enumerate(w.class_ingredients):
        owner[ings] = k
    has = np.zeros((n, len(w.class_ingredients)), dtype=bool)
    m = owner[ing_idx] >= 0
    has[ing_stay[m], owner[ing_idx[m]]] = True
    p = np.where(has[:, w.linked_class], w.linked_p[:, 0], w.linked_p[:, 1])  # (n, m)
    hit = rng.random(p.shape) < p
    hit[newborn] = False
    hit[nodx] = False
    r, c = np.nonzero(hit)
    L = len(w.leaves)
    new = ~np.isin(r * L + w.linked_codes[c], code_stay * L + code_leaf)
    r, c = r[new], c[new]
    stay = np.concatenate([code_stay, r])
    leaf = np.concatenate([code_leaf, w.linked_codes[c]])
    order = np.lexsort((leaf, stay))
    return stay[order], leaf[order]


_EPOCH = np.datetime64("2100-01-01", "D")


def _dates(days: np.ndarray) -> pa.Array:
    """Days after 2100-01-01 as an Arrow date32 array."""
    return pa.array((_EPOCH + days.astype("timedelta64[D]")).astype("datetime64[D]"), type=pa.date32())


def _tables(n: int, seed: int) -> dict[str, pa.Table]:
    """The seven OMOP tables as Arrow tables."""
    s = _stays(n, seed)
    w: World = s["world"]
    rng: np.random.Generator = s["rng"]
    stype, person, start, los = s["stype"], s["person"], s["start"], s["los"]
    end = start + los
    visit_id = np.arange(1, n + 1, dtype=np.int64)
    person_id = person + 1
    tables: dict[str, pa.Table] = {}

    birth = s["birth"]
    bdays = (_EPOCH + birth.astype("timedelta64[D]")).astype("datetime64[D]")
    years = bdays.astype("datetime64[Y]").astype(np.int64) + 1970
    months = bdays.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dom = (bdays - bdays.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    tables["person"] = pa.table({
        "person_id": np.arange(1, len(birth) + 1, dtype=np.int64),
        "gender_concept_id": np.where(s["female"], FEMALE, MALE).astype(np.int64),
        "year_of_birth": years, "month_of_birth": months, "day_of_birth": dom,
        "birth_datetime": pa.array(bdays.astype("datetime64[s]"), type=pa.timestamp("s")),
        "gender_source_value": pa.array(np.where(s["female"], "F", "M").astype(object), type=pa.string()),
    })
    tables["visit_occurrence"] = pa.table({
        "visit_occurrence_id": visit_id, "person_id": person_id,
        "visit_concept_id": np.full(n, INPATIENT_VISIT, dtype=np.int64),
        "visit_start_date": _dates(start), "visit_end_date": _dates(end),
        "visit_type_concept_id": np.full(n, VISIT_TYPE_EHR, dtype=np.int64),
    })
    # services: MIMIC-III-like weights inside each stay type
    svc = np.empty(n, dtype=object)
    for t, names, p in (
        (0, NEWBORN_SERVICES, [0.95, 0.05]),
        (1, SURGICAL_SERVICES, [0.26, 0.16, 0.07, 0.02, 0.2, 0.08, 0.08, 0.13]),
        (2, MEDICAL_SERVICES, [0.62, 0.2, 0.07, 0.04, 0.01, 0.01, 0.01, 0.02, 0.005, 0.015]),
    ):
        m = stype == t
        svc[m] = np.array(names, dtype=object)[rng.choice(len(names), size=int(m.sum()), p=np.array(p) / sum(p))]
    tables["visit_detail"] = pa.table({
        "visit_detail_id": visit_id, "person_id": person_id,
        "visit_detail_concept_id": np.full(n, INPATIENT_VISIT, dtype=np.int64),
        "visit_detail_start_date": _dates(start), "visit_detail_end_date": _dates(end),
        "visit_detail_type_concept_id": np.full(n, VISIT_TYPE_EHR, dtype=np.int64),
        "visit_occurrence_id": visit_id,
        "visit_detail_source_value": pa.array(svc, type=pa.string()),
    })
    tables["drug_exposure"] = _drug_table(s, w, rng, person_id, start, los)
    tables["condition_occurrence"] = _condition_table(s, w, rng, person_id, start)
    tables["concept"], tables["concept_ancestor"] = _vocabulary(w)
    return tables


def _drug_table(s: dict, w: World, rng: np.random.Generator, person_id, start, los) -> pa.Table:
    """drug_exposure: written prescriptions (repeated, some combos, some unmapped) + infusions."""
    ing_stay, ing_idx = s["ing_stay"], s["ing_idx"]
    reps = 1 + rng.poisson(0.3, len(ing_stay))
    st, ig = np.repeat(ing_stay, reps), np.repeat(ing_idx, reps)
    u = rng.random(len(st))
    drug = w.single_start[ig] + (u * w.single_count[ig]).astype(np.int64)
    concept = DRUG_BASE + drug
    combo_n = np.array([len(c) for c in w.combo_of])[ig]
    use_combo = (combo_n > 0) & (rng.random(len(st)) < 0.1)
    for r in np.flatnonzero(use_combo):
        concept[r] = DRUG_BASE + w.combo_of[ig[r]][int(rng.integers(combo_n[r]))]
    direct = rng.random(len(st)) < 0.03
    concept[direct] = INGREDIENT_BASE + ig[direct]
    src = np.where(concept >= DRUG_BASE, concept - DRUG_BASE, -1)
    source = np.where(src >= 0, w.drug_names[np.maximum(src, 0)], w.ingredient_names[ig])
    unmapped = rng.random(len(st)) < 0.004
    concept[unmapped] = 0
    dtype = np.full(len(st), PRESCRIPTION_WRITTEN, dtype=np.int64)
    # ICU-like infusions, another drug type (the loader filters them out by default)
    n = s["n"]
    n_inf = np.where((s["stype"] != 0) & (rng.random(n) < 0.35), 1 + rng.poisson(3, n), 0)
    inf_stay = _segments(n_inf)
    inf_ing = w.infusion[rng.integers(0, len(w.infusion), len(inf_stay))]
    st = np.concatenate([st, inf_stay])
    concept = np.concatenate([concept, DRUG_BASE + w.single_start[inf_ing]])
    source = np.concatenate([source, w.drug_names[w.single_start[inf_ing]]])
    dtype = np.concatenate([dtype, np.full(len(inf_stay), INPATIENT_ADMINISTRATION, dtype=np.int64)])
    order = np.argsort(st, kind="stable")
    st, concept, source, dtype = st[order], concept[order], source[order], dtype[order]
    day = start[st] + (rng.random(len(st)) * los[st]).astype(np.int64)
    return pa.table({
        "drug_exposure_id": np.arange(1, len(st) + 1, dtype=np.int64),
        "person_id": person_id[st], "drug_concept_id": concept.astype(np.int64),
        "drug_exposure_start_date": _dates(day),
        "drug_exposure_end_date": _dates(np.minimum(day + rng.integers(0, 4, len(st)), start[st] + los[st])),
        "drug_type_concept_id": dtype, "visit_occurrence_id": st.astype(np.int64) + 1,
        "drug_source_value": pa.array(source.astype(object), type=pa.string()),
    })


def _condition_table(s: dict, w: World, rng: np.random.Generator, person_id, start) -> pa.Table:
    """condition_occurrence: one row per (visit, code, standard concept)."""
    cst, leaf = s["code_stay"], s["code_leaf"]
    # shuffle codes inside each stay, so the first (primary) code is not always the smallest
    order = np.lexsort((rng.random(len(cst)), cst))
    cst, leaf = cst[order], leaf[order]
    first = np.r_[True, cst[1:] != cst[:-1]]
    code = w.leaves[leaf].astype(object)
    reps = w.n_snomed[leaf]
    r_st, r_leaf, r_code = np.repeat(cst, reps), np.repeat(leaf, reps), np.repeat(code, reps)
    r_first = np.repeat(first, reps)
    k = np.arange(len(r_st)) - np.repeat(np.cumsum(reps) - reps, reps)  # mapping index 0..2
    snomed = SNOMED_BASE + 3 * r_leaf + k
    source_concept = ICD9_BASE + r_leaf
    return pa.table({
        "condition_occurrence_id": np.arange(1, len(r_st) + 1, dtype=np.int64),
        "person_id": person_id[r_st], "condition_concept_id": snomed.astype(np.int64),
        "condition_start_date": _dates(start[r_st]),
        "condition_type_concept_id": np.where(r_first, CONDITION_TYPE_PRIMARY, CONDITION_TYPE_SECONDARY).astype(np.int64),
        "visit_occurrence_id": r_st.astype(np.int64) + 1,
        "condition_source_value": pa.array(r_code, type=pa.string()),
        "condition_source_concept_id": source_concept.astype(np.int64),
    })


def _vocabulary(w: World) -> tuple[pa.Table, pa.Table]:
    """concept (ingredients, drugs, SNOMED-like, ICD9CM, a few standard ids) and concept_ancestor."""
    n_i, n_d = len(w.ingredient_names), len(w.drug_names)
    used = np.flatnonzero(w.code_class != "unused")
    sn_leaf = np.repeat(used, w.n_snomed[used])
    sn_k = np.arange(len(sn_leaf)) - np.repeat(np.cumsum(w.n_snomed[used]) - w.n_snomed[used], w.n_snomed[used])
    fixed = [(FEMALE, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
             (MALE, "MALE", "Gender", "Gender", "Gender", "S", "M"),
             (INPATIENT_VISIT, "Inpatient Visit", "Visit", "Visit", "Visit", "S", "IP"),
             (PRESCRIPTION_WRITTEN, "Prescription written", "Type Concept", "Drug Type", "Drug Type", "S", "OMOP4822241"),
             (INPATIENT_ADMINISTRATION, "Inpatient administration", "Type Concept", "Drug Type", "Drug Type", "S", "OMOP4822244")]
    cols = {
        "concept_id": np.concatenate([
            [f[0] for f in fixed], INGREDIENT_BASE + np.arange(n_i), DRUG_BASE + np.arange(n_d),
            SNOMED_BASE + 3 * sn_leaf + sn_k, ICD9_BASE + used]).astype(np.int64),
        "concept_name": [f[1] for f in fixed] + list(w.ingredient_names) + list(w.drug_names)
        + [f"Synthetic finding for {w.leaves[i]} ({k + 1})" for i, k in zip(sn_leaf, sn_k)]
        + [icd9.description(w.leaves[i]) for i in used],
        "domain_id": [f[2] for f in fixed] + ["Drug"] * (n_i + n_d) + ["Condition"] * (len(sn_leaf) + len(used)),
        "vocabulary_id": [f[3] for f in fixed] + ["RxNorm"] * (n_i + n_d) + ["SNOMED"] * len(sn_leaf) + ["ICD9CM"] * len(used),
        "concept_class_id": [f[4] for f in fixed] + ["Ingredient"] * n_i + ["Clinical Drug"] * n_d
        + ["Clinical Finding"] * len(sn_leaf) + [f"{icd9.level(w.leaves[i])[0]}-dig billing code" for i in used],
        "standard_concept": [f[5] for f in fixed] + ["S"] * (n_i + n_d + len(sn_leaf)) + [None] * len(used),
        "concept_code": [f[6] for f in fixed] + [f"SYN{i}" for i in range(n_i)] + [f"SYND{i}" for i in range(n_d)]
        + [f"SYNF{3 * i + k}" for i, k in zip(sn_leaf, sn_k)] + [icd9.dotted(w.leaves[i]) for i in used],
    }
    concept = pa.table({k: (pa.array(v, type=pa.string()) if k != "concept_id" else v) for k, v in cols.items()})
    anc, desc, lev = [], [], []
    for d, ings in enumerate(w.drug_ingredients):
        for i in ings:
            anc.append(INGREDIENT_BASE + i)
            desc.append(DRUG_BASE + d)
            lev.append(1)
    anc += [INGREDIENT_BASE + i for i in range(n_i)]
    desc += [INGREDIENT_BASE + i for i in range(n_i)]
    lev += [0] * n_i
    lev_a = np.array(lev, dtype=np.int64)
    ancestor = pa.table({
        "ancestor_concept_id": np.array(anc, dtype=np.int64), "descendant_concept_id": np.array(desc, dtype=np.int64),
        "min_levels_of_separation": lev_a, "max_levels_of_separation": lev_a,
    })
    return concept, ancestor


def write_omop(folder: str | Path, n_stays: int = 12_000, seed: int = 0, fmt: str = "csv") -> Path:
    """Write the synthetic OMOP CDM 5.3 tables into `folder` (<table>.csv or .parquet); return it."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tables = _tables(int(n_stays), int(seed))
    for name in tqdm(TABLES, desc="writing OMOP tables", leave=False, disable=n_stays < 20_000):
        path = folder / f"{name}.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(tables[name], path)
        else:
            pq.write_table(tables[name], path, compression="zstd")
    logger.info("wrote %d synthetic stays (seed %d) as %s in %s", n_stays, seed, fmt, folder)
    return folder


def _damage(folder: Path) -> str | None:
    """None when `folder` holds a complete synthetic set whose files match the record in its .complete file."""
    f = folder / ".complete"
    if not f.is_file():
        return "absent"
    try:
        files = json.loads(f.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"{f} records no sizes and hashes of the tables (written by an older version)"
    bad = check_files(folder, files)
    return "; ".join(f"{p} is {why}" for p, why in bad) or None


def default_folder(n_stays: int, seed: int = 0, root: str | Path | None = None, fmt: str = "csv") -> Path:
    """The cached synthetic OMOP folder for these parameters under `root`, written once (atomically).

    Its `.complete` file records each table file's size and SHA-256; every call checks them and
    regenerates (same bytes, with a warning naming the file) a folder that was damaged since.
    """
    root = Path(root) if root is not None else cache_root() / "synthetic"
    final = root / f"omop-v{GENERATOR_VERSION}-n{int(n_stays)}-s{int(seed)}-{fmt}"
    if _damage(final) is None:
        return final
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{final.name}.lock"):
        damage = _damage(final)
        if damage is None:
            return final
        if damage != "absent":
            logger.warning("synthetic data %s is damaged: %s; regenerating it", final, damage)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
        try:
            tmp.chmod(created_mode(folder=True))  # mkdtemp makes it 0700, private to its owner
            write_omop(tmp, n_stays, seed, fmt)
            files = record_files(tmp, [p.name for p in tmp.iterdir() if p.is_file()])
            (tmp / ".complete").write_text(json.dumps({"files": files}, indent=1))
            if final.exists():  # a half-written folder from an older crash, or a damaged one
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
