"""dlnjax: a JAX-accelerated, differentiable simulator of the training dynamics of deep linear networks.

The network state (`DLN`), its geometry (moments, fibers, projections), the flows of Lindsey &
Menon (seed 001) in `dlnjax.flows`, and `simulate` to integrate them with Diffrax. Bad input raises
one exception type per kind (`ShapeError`, `NonFiniteError`, `OptionError`, `UnsupportedError`,
`InputTypeError`, `ConfigError`, `StoreError`; all ``ValueError``). Test oracles and solver
internals live in `dlnjax.internal`.
"""

from . import flows as flows
from . import internal as internal
from . import losses as losses
from . import sweep as sweep
from . import systems as systems
from ._activations import Activation as Activation
from ._balanced_posterior import balanced_log_density as balanced_log_density
from ._balanced_posterior import balanced_orbit_sample as balanced_orbit_sample
from ._balanced_posterior import balanced_posterior_sample as balanced_posterior_sample
from ._diagnostics import (
    RegressionConstants as RegressionConstants,
)
from ._diagnostics import (
    alignment as alignment,
)
from ._diagnostics import (
    distance_to_minimizer as distance_to_minimizer,
)
from ._diagnostics import (
    effective_rank as effective_rank,
)
from ._diagnostics import (
    layer_norm_differences as layer_norm_differences,
)
from ._diagnostics import (
    layer_norms as layer_norms,
)
from ._diagnostics import (
    neuron_balance as neuron_balance,
)
from ._diagnostics import (
    numerical_rank as numerical_rank,
)
from ._diagnostics import (
    rank_one_ratio as rank_one_ratio,
)
from ._diagnostics import (
    regression_constants as regression_constants,
)
from ._diagnostics import (
    sharpness as sharpness,
)
from ._diagnostics import (
    sharpness_bounds as sharpness_bounds,
)
from ._errors import ConfigError as ConfigError
from ._errors import InputTypeError as InputTypeError
from ._errors import NonFiniteError as NonFiniteError
from ._errors import OptionError as OptionError
from ._errors import ShapeError as ShapeError
from ._errors import StoreError as StoreError
from ._errors import UnsupportedError as UnsupportedError
from ._fast_slow import (
    FastSlowDiagnostic as FastSlowDiagnostic,
)
from ._fast_slow import (
    fast_slow_diagnostic as fast_slow_diagnostic,
)
from ._fast_slow import (
    learning_first_prediction as learning_first_prediction,
)
from ._fast_slow import (
    regularized_velocity_split as regularized_velocity_split,
)
from ._fast_slow import (
    two_stage_prediction as two_stage_prediction,
)
from ._fast_slow import (
    velocity_split as velocity_split,
)
from ._fiber import (
    FiberCG as FiberCG,
)
from ._fiber import (
    balanced_preconditioner as balanced_preconditioner,
)
from ._fiber import (
    default_fiber_solver as default_fiber_solver,
)
from ._fiber import (
    fiber_l2_gradient as fiber_l2_gradient,
)
from ._fiber import (
    fiber_normal_projection as fiber_normal_projection,
)
from ._fiber import (
    fiber_tangent_projection as fiber_tangent_projection,
)
from ._fiber import (
    normal_operator as normal_operator,
)
from ._fiber import (
    solve_normal as solve_normal,
)
from ._fiber_coordinates import fiber_coordinates as fiber_coordinates
from ._fiber_coordinates import fiber_point_with_moments as fiber_point_with_moments
from ._fiber_operator import (
    BalancedPreconditioner as BalancedPreconditioner,
)
from ._fiber_operator import (
    FiberProducts as FiberProducts,
)
from ._fiber_operator import (
    NormalOperator as NormalOperator,
)
from ._fiber_projected import FiberProjected as FiberProjected
from ._fiber_projected import project_to_fiber as project_to_fiber
from ._fiber_solvers import (
    AbstractFiberSolver as AbstractFiberSolver,
)
from ._fiber_solvers import (
    FiberDense as FiberDense,
)
from ._fiber_solvers import (
    FiberLineax as FiberLineax,
)
from ._fiber_solvers import (
    FiberResults as FiberResults,
)
from ._fiber_solvers import (
    FiberSolution as FiberSolution,
)
from ._geometry import (
    inner as inner,
)
from ._geometry import (
    network_gradient as network_gradient,
)
from ._geometry import (
    network_loss as network_loss,
)
from ._geometry import (
    partial_grams as partial_grams,
)
from ._geometry import (
    partial_products as partial_products,
)
from ._geometry import (
    product_adjoint as product_adjoint,
)
from ._geometry import (
    product_differential as product_differential,
)
from ._init import (
    fiber_center as fiber_center,
)
from ._init import (
    gaussian as gaussian,
)
from ._init import (
    group_action as group_action,
)
from ._init import (
    identity as identity,
)
from ._init import (
    orthogonal as orthogonal,
)
from ._init import (
    random_fiber_point as random_fiber_point,
)
from ._init import (
    residual as residual,
)
from ._metric import (
    end_to_end_metric as end_to_end_metric,
)
from ._metric import (
    end_to_end_multiplier as end_to_end_multiplier,
)
from ._metric import (
    end_to_end_operator as end_to_end_operator,
)
from ._metric import (
    end_to_end_operator_inverse as end_to_end_operator_inverse,
)
from ._metric import (
    log_volume_density as log_volume_density,
)
from ._network import (
    DLN as DLN,
)
from ._network import (
    balancedness as balancedness,
)
from ._network import (
    end_to_end as end_to_end,
)
from ._network import (
    forward as forward,
)
from ._network import (
    moments as moments,
)
from ._network import (
    squared_norm as squared_norm,
)
from ._orbits import exp_action as exp_action
from ._orbits import kirwan_ness_rates as kirwan_ness_rates
from ._orbits import lie_algebra_shapes as lie_algebra_shapes
from ._orbits import orbit_derivative as orbit_derivative
from ._orbits import orbit_hessian as orbit_hessian
from ._orbits import orbit_norm as orbit_norm
from ._orbits import orbit_schatten as orbit_schatten
from ._orbits import orbit_second_derivative as orbit_second_derivative
from ._orbits import orbit_tangent as orbit_tangent
from ._padding import (
    pad as pad,
)
from ._padding import (
    padded_balancedness as padded_balancedness,
)
from ._padding import (
    padded_layer_norms as padded_layer_norms,
)
from ._padding import (
    padded_squared_norm as padded_squared_norm,
)
from ._padding import (
    unpad as unpad,
)
from ._quantities import padded_objective as padded_objective
from ._simulate import Trajectory as Trajectory
from ._simulate import simulate as simulate
from ._stiff import Stiff as Stiff
from ._train import METRICS as METRICS
from ._train import TrainResult as TrainResult
from ._train import train as train
from .flows._fiber import schatten_regularizer as schatten_regularizer
from .sweep import load as load

__version__ = "0.1.0"


def __getattr__(name):
    # Names that moved to dlnjax.internal (test oracles, solver internals) still resolve here, with a warning.
    if name in internal.MOVED:
        import warnings

        warnings.warn(
            f"dlnjax.{name} moved to dlnjax.internal.{name}; the old name will go.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(internal, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
