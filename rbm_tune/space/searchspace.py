"""A validated search space: fixed values, searched parameters, study settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rbm_tune.config import TrialConfig
from rbm_tune.errors import ConfigError, SpaceError
from rbm_tune.space.corners import corner_points, to_config
from rbm_tune.space.params import Param, pick_values, suggest_all
from rbm_tune.space.study import StudySettings
from rbm_tune.space.values import one_line

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchSpace"]


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; build it with :func:`load_space`.

    Attributes:
        path: the file it came from.
        digest: sha256 of the file's bytes (the space-file hash tag).
        study: the study settings.
        fixed: every hyperparameter that is not searched, by flat name (``dataset``,
            ``setting``, ``seed``, ``teacher.*``, ``student.*``, ``distill.*``, schema defaults
            included): ``{**fixed, **final values}`` is exactly ``config_for(...).flat()``
            but for the parameters a trial did not draw (``when:``), which hold the schema's
            default there.
        params: the searched hyperparameters in sampling (file) order.
        overrides: the ``--set KEY=VALUE`` changes applied to the file (in the digest too).
    """

    path: Path
    digest: str
    study: StudySettings
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    overrides: tuple[str, ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def conditional(self) -> bool:
        """Whether some parameter is drawn only under a condition (``when:``, the family)."""
        return any(p.when for p in self.params)

    @property
    def undrawn_defaults(self) -> dict[str, Any]:
        """What a trial config holds for each conditional parameter where it is not drawn (the
        schema's default; MLflow logs it for the trials that use it, as for a fixed value)."""
        schema = TrialConfig().flat()
        return {p.name: schema[p.name] for p in self.params if p.when}

    def define_by_run(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Optuna/Ray define-by-run: draw every parameter in file order.

        Returns:
            the flat dict of drawn constants: every Optuna parameter (``.is_zero`` switches
            included) and, for every searched hyperparameter, its final value under its name.
        """
        return suggest_all(self.params, trial, self.fixed)

    def config_for(self, sampled: Mapping[str, Any]) -> TrialConfig:
        """Fixed values + ``sampled`` (a :meth:`define_by_run` dict) -> a validated TrialConfig.

        Raises:
            SpaceError: a key is not searched here, a searched one is missing, a value is invalid.
        """
        try:
            return to_config(self.path, self.params, self.fixed, sampled)
        except SpaceError:
            raise
        except ConfigError as err:
            raise SpaceError(one_line(f"{self.path}: {err}")) from None

    def default_params(self) -> dict[str, Any]:
        """Optuna parameters of the default point: each ``default:``, else the first choice or
        the (geometric) middle. For ``OptunaSearch(points_to_evaluate=[...])``."""
        return pick_values(self.path, self.params, self.fixed, "default", {})

    def corners(self) -> list[tuple[str, TrialConfig]]:
        """(label, config) of the default point and every corner :func:`load_space` checked:
        ``"high"`` (every parameter at its upper end), ``"low, student.k=hi"``, ..."""
        from optuna.trial import FixedTrial

        out = []
        for base, picks, values in corner_points(self.path, self.params, self.fixed):
            sampled = suggest_all(self.params, FixedTrial(values), self.fixed)
            at = [f"{name}={sampled.get(name, 0)}" for name in picks]
            out.append((", ".join([base, *at]), self.config_for(sampled)))
        return out

    def default_config(self) -> TrialConfig:
        """The TrialConfig at :meth:`default_params`; with nothing searched, the file itself."""
        from optuna.trial import FixedTrial

        return self.config_for(self.define_by_run(FixedTrial(self.default_params())))
