"""What Adam *is*: variant axes, hyperparameters and the catalog of named variants.

Data and documentation only; ``oracles`` executes it, ``impl`` implements it.
"""

from adamspec.spec.axes import (
    ALL_AXES,
    AmsGrad,
    BiasCorrection,
    DuplicateIndices,
    EpsPlacement,
    Family,
    HyperPrecision,
    Nesterov,
    SparseSemantics,
    WeightDecay,
)
from adamspec.spec.catalog import (
    CATALOG,
    CatalogEntry,
    Citation,
    UnknownVariantError,
    entries,
    entry,
)
from adamspec.spec.formats import FORMATS, FloatFormat, FormatError, format_named
from adamspec.spec.gradients import SparseRows
from adamspec.spec.hyper import Hyper, HyperparameterError, Schedule, make_hyper
from adamspec.spec.variant import Variant, VariantError

__all__ = [
    "ALL_AXES",
    "CATALOG",
    "FORMATS",
    "AmsGrad",
    "BiasCorrection",
    "CatalogEntry",
    "Citation",
    "DuplicateIndices",
    "EpsPlacement",
    "Family",
    "FloatFormat",
    "FormatError",
    "Hyper",
    "HyperPrecision",
    "HyperparameterError",
    "Nesterov",
    "Schedule",
    "SparseRows",
    "SparseSemantics",
    "UnknownVariantError",
    "Variant",
    "VariantError",
    "WeightDecay",
    "entries",
    "entry",
    "format_named",
    "make_hyper",
]
