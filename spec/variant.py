"""A variant of Adam: one choice on every axis of :mod:`adamspec.spec.axes`.

A :class:`Variant` fixes the formula; :class:`adamspec.spec.hyper.Hyper` fixes the
numbers. The oracle executes ``(Variant, Hyper)`` exactly; implementations
are compared against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from adamspec.spec.axes import (
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


class VariantError(ValueError):
    """An incoherent combination of axes."""


@dataclass(frozen=True)
class Variant:
    """One point in the space of Adam formulas (see ``spec/ADAM.md``).

    The update of one step, for a coordinate with gradient ``g``::

        g      <- -g if maximize; clipped; + lambda theta if weight_decay is L2
        m      <- beta1 m + (1 - beta1) g
        v      <- beta2 v + (1 - beta2) g^2
        m_hat  =  m / c1           (or the Nesterov numerator / c1)
        s_hat  =  v / c2           (or the AMSGrad maximum, see AmsGrad)
        u      =  m_hat / (sqrt(s_hat + eps_root) + eps_eff)
        theta  <- theta - lr u     (with decoupled decay before or after)

    with ``eps_eff = eps / sqrt(c2)`` for ``EPS_HAT`` and ``eps`` otherwise.
    """

    family: Family = Family.ADAM
    eps_placement: EpsPlacement = EpsPlacement.ALGORITHM_1
    bias_correction_m: BiasCorrection = BiasCorrection.POWER
    bias_correction_v: BiasCorrection = BiasCorrection.POWER
    amsgrad: AmsGrad = AmsGrad.OFF
    weight_decay: WeightDecay = WeightDecay.NONE
    nesterov: Nesterov = Nesterov.OFF
    maximize: bool = False
    sparse: SparseSemantics = SparseSemantics.DENSE_EQUIVALENT
    duplicates: DuplicateIndices = DuplicateIndices.SUM_THEN_SQUARE
    hyper_precision: HyperPrecision = HyperPrecision.IDEAL

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "maximize":
                if not isinstance(value, bool):
                    raise VariantError(f"maximize={value!r} must be true or false")
                continue
            axis = _AXIS_OF_FIELD[f.name]
            if not isinstance(value, axis):
                try:
                    object.__setattr__(self, f.name, axis(value))
                except ValueError:
                    allowed = ", ".join(m.value for m in axis)
                    raise VariantError(
                        f"{f.name}={value!r} is not a {axis.__name__}; allowed: {allowed}"
                    ) from None
        self._check_coherent()

    def _check_coherent(self) -> None:
        if (
            self.amsgrad is AmsGrad.MAX_RAW_V_UNCORRECTED
            and self.bias_correction_v is not BiasCorrection.NONE
        ):
            raise VariantError(
                "amsgrad=max_raw_v_uncorrected uses no v bias correction; "
                f"bias_correction_v={self.bias_correction_v.value!r} must be 'none'"
            )
        if self.family is Family.RADAM:
            if self.eps_placement is not EpsPlacement.EPS_HAT:
                raise VariantError(
                    f"family=radam defines eps in the eps-hat form; eps_placement="
                    f"{self.eps_placement.value!r} must be 'eps_hat'"
                )
            if self.amsgrad is not AmsGrad.OFF or self.nesterov is not Nesterov.OFF:
                raise VariantError("family=radam has no AMSGrad or Nesterov form")
            if BiasCorrection.NONE in (self.bias_correction_m, self.bias_correction_v):
                raise VariantError("family=radam requires both bias corrections")

    def replace(self, **changes: Any) -> Variant:
        """A copy with some axes changed (validated)."""
        return replace(self, **changes)

    def axes(self) -> dict[str, str | bool]:
        """The axes as plain strings, for JSON and reports."""
        return {k: (v if isinstance(v, bool) else v.value) for k, v in asdict(self).items()}

    @classmethod
    def from_axes(cls, axes: dict[str, Any]) -> Variant:
        """Inverse of :meth:`axes`; unknown keys are rejected."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(axes) - names)
        if unknown:
            raise VariantError(
                f"unknown variant axis {unknown[0]!r}; allowed: {', '.join(sorted(names))}"
            )
        return cls(**axes)


_AXIS_OF_FIELD = {
    "family": Family,
    "eps_placement": EpsPlacement,
    "bias_correction_m": BiasCorrection,
    "bias_correction_v": BiasCorrection,
    "amsgrad": AmsGrad,
    "weight_decay": WeightDecay,
    "nesterov": Nesterov,
    "sparse": SparseSemantics,
    "duplicates": DuplicateIndices,
    "hyper_precision": HyperPrecision,
}
