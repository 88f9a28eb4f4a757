"""The paper's experiments, each declared once: labels, loss, output rule, target metric, display names; families."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from cacicd.models.train import TARGETS


LABEL_SETS = ("all", "cherry", "chapter", "subchapter", "3digit", "billing")
RESULT_VERSION = 4  # 2: keras-tuner Hyperband search, top model kept; IRNW as the authors ran it; 3: keras-tuner 1.1.2
# sampling, Keras initialisation (no hidden bias under batchnorm), BatchNormalization and Adam; 4: the fused CPU
# training step (cacicd.models.kernels: BCE and Adam in one pass each, the bias added in float32 after the bfloat16
# product, dropout masks drawn from uniform variates)


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper: what is trained (labels, loss, model), tuned on what, post-processed how."""

    name: str
    description: str
    labels: str = "all"  # LABEL_SETS
    loss: str = "bce"
    output_rule: str = "identity"  # applied at inference (and to dev predictions during training)
    target: str = "ndcg"
    model: str = "mlp"  # "mlp" | "dummy"
    parts: tuple[str, ...] = ()  # composite of these experiments' predictions
    label: str = ""  # display name in reports and paper-comparable tables ("" : the name)
    short: str = ""  # short display name among the methods of a figure ("" : the label)
    tuned_on: str = ""  # short name of the target metric, among models tuned on different ones

    def key(self) -> str:
        """Hash of the declaration (and of its parts): a change invalidates cached results."""
        d = dataclasses.asdict(self)
        for display in ("description", "label", "short", "tuned_on"):  # display only: not part of the result
            d.pop(display)
        deps = [EXPERIMENTS[n].key() for n in self.parts]
        return hashlib.sha256(json.dumps([d, deps, RESULT_VERSION], sort_keys=True).encode()).hexdigest()[:16]


def _declare(*exps: Experiment) -> dict[str, Experiment]:
    return {e.name: e for e in exps}


_TARGET_TEXT = {"f1_micro": "micro F1", "f1_macro": "macro F1", "ndcg": "NDCG", "auprc_micro": "micro AUPRC",
                "auprc_macro": "macro AUPRC", "auroc_micro": "micro AUROC", "auroc_macro": "macro AUROC"}
_TARGET_SHORT = {"f1_micro": "μF1", "f1_macro": "macro F1", "ndcg": "NDCG", "auprc_micro": "μAUPRC",
                 "auprc_macro": "macro AUPRC", "auroc_micro": "μAUROC", "auroc_macro": "macro AUROC"}
_TARGET_LABEL = {"f1_micro": "μF1", "f1_macro": "macro-F1", "ndcg": "NDCG", "auprc_micro": "μAUPRC",
                 "auprc_macro": "macro-AUPRC", "auroc_micro": "μAUROC", "auroc_macro": "macro-AUROC"}
LEVEL_PARTS = {"chapter": "level_chapter_ndcg", "subchapter": "level_subchapter_ndcg",
               "3digit": "level_3digit_ndcg", "billing": "level_billing_ndcg"}

EXPERIMENTS: dict[str, Experiment] = _declare(
    Experiment("dummy", "training-set frequency of each code, the same for every stay", model="dummy",
               target="ndcg", label="dummy (training-set frequency)"),
    *[Experiment(f"naive_{t}", f"naive multitask on all codes, tuned on {txt}", target=t,
                 label=f"{_TARGET_LABEL[t]}-tuned naive multitask", short="naive multitask",
                 tuned_on=_TARGET_SHORT[t])
      for t, txt in _TARGET_TEXT.items()],
    Experiment("cherry_f1_micro", "Hansen-like: cherry-picked codes only, tuned on micro F1 (unseen codes score 0)",
               labels="cherry", target="f1_micro", label="μF1-tuned cherry-picked (Hansen-like)",
               short="cherry-picked", tuned_on="μF1"),
    *[Experiment(name, f"per-level model on {lv} codes only, tuned on NDCG", labels=lv)
      for lv, name in LEVEL_PARTS.items()],
    Experiment("per_level_ndcg", "four per-level models (chapter, subchapter, 3-digit, billing) assembled",
               parts=tuple(LEVEL_PARTS.values()), short="per level"),
    Experiment("reweighted_ndcg", "re-weighted multitask BCE (equal total weight per level group)",
               loss="reweighted_bce", short="re-weighted"),
    Experiment("rollup_ndcg", "plain BCE, roll-up (max over descendants) applied to what the search sees, "
               "tuned on NDCG", output_rule="rollup", short="roll-up"),
    Experiment("rolldown_ndcg", "plain BCE, roll-down (min over ancestors) applied to what the search sees, "
               "tuned on NDCG", output_rule="rolldown", short="roll-down"),
    Experiment("mcloss_ndcg", "MCLoss (hierarchy-constrained BCE), roll-up at inference", loss="mcloss",
               output_rule="rollup", short="MCLoss"),
    Experiment("treemin_ndcg", "TreeMin loss (hierarchy-constrained BCE), plain sigmoid at inference",
               loss="treemin", short="TreeMin"),
    Experiment("hierl2_ndcg", "BCE + hierarchical L2 between parent and child output weights", loss="hier_l2",
               short="HierL2"),
    Experiment("outl2_ndcg", "BCE + L2 on the output layer's weights", loss="output_l2", short="output L2"),
    Experiment("irw_ndcg", "imbalance-ratio weighted BCE (IRW)", loss="irw", short="IRW"),
    Experiment("irnw_ndcg", "imbalance-ratio normalised weighted BCE (IRNW)", loss="irnw", short="IRNW"),
    Experiment("focal_ndcg", "focal loss without alpha", loss="focal", short="focal"),
)


def _validate() -> None:
    for e in EXPERIMENTS.values():
        if e.labels not in LABEL_SETS or e.target not in TARGETS or e.model not in ("mlp", "dummy"):
            raise ValueError(f"experiment {e.name}: bad labels/target/model {e.labels}/{e.target}/{e.model}")
        for dep in e.parts:
            if dep not in EXPERIMENTS:
                raise ValueError(f"experiment {e.name} depends on unknown experiment {dep!r}")


_validate()


def get_experiment(name: str) -> Experiment:
    """The declared experiment of that name, with a clear error for an unknown one."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}") from None


def trained_experiments() -> list[str]:
    """Names of the experiments that train a network (no parts, model mlp)."""
    return [e.name for e in EXPERIMENTS.values() if e.model == "mlp" and not e.parts]


def family(exp: Experiment) -> list[Experiment]:
    """The experiments whose searches train the same networks as `exp` (same labels and loss): one store."""
    if exp.model != "mlp" or exp.parts:
        raise ValueError(f"experiment {exp.name} has no search of its own (model {exp.model}, parts {exp.parts})")
    return [e for e in EXPERIMENTS.values()
            if e.model == "mlp" and not e.parts and e.labels == exp.labels and e.loss == exp.loss]
