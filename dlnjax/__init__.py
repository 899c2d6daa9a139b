"""dlnjax: a JAX-accelerated, differentiable simulator of the training dynamics of deep linear networks.

The network state (`DLN`), its geometry (moments, fibers, projections), the flows of Lindsey &
Menon (seed 001) in `dlnjax.flows`, and `simulate` to integrate them with Diffrax.
"""

from . import flows as flows, losses as losses, sweep as sweep
from ._activations import Activation as Activation
from ._aligned import aligned_singular_values as aligned_singular_values
from ._diagnostics import (
    alignment as alignment,
    distance_to_minimizer as distance_to_minimizer,
    effective_rank as effective_rank,
    layer_norm_differences as layer_norm_differences,
    layer_norms as layer_norms,
    neuron_balance as neuron_balance,
    numerical_rank as numerical_rank,
    rank_one_ratio as rank_one_ratio,
    regression_constants as regression_constants,
    RegressionConstants as RegressionConstants,
    sharpness as sharpness,
    sharpness_bounds as sharpness_bounds,
)
from ._fast_slow import (
    fast_slow_diagnostic as fast_slow_diagnostic,
    FastSlowDiagnostic as FastSlowDiagnostic,
    learning_first_prediction as learning_first_prediction,
    regularized_velocity_split as regularized_velocity_split,
    two_stage_prediction as two_stage_prediction,
    velocity_split as velocity_split,
)
from ._fiber import (
    balanced_preconditioner as balanced_preconditioner,
    default_fiber_solver as default_fiber_solver,
    FiberCG as FiberCG,
    fiber_l2_gradient as fiber_l2_gradient,
    fiber_normal_projection as fiber_normal_projection,
    fiber_tangent_projection as fiber_tangent_projection,
    normal_operator as normal_operator,
    solve_normal as solve_normal,
)
from ._geometry import (
    inner as inner,
    network_gradient as network_gradient,
    network_loss as network_loss,
    partial_grams as partial_grams,
    partial_products as partial_products,
    product_adjoint as product_adjoint,
    product_differential as product_differential,
)
from ._init import (
    fiber_center as fiber_center,
    gaussian as gaussian,
    group_action as group_action,
    identity as identity,
    orthogonal as orthogonal,
    random_fiber_point as random_fiber_point,
    residual as residual,
)
from ._lemma5 import (
    fiber_l2_gradient_lemma5 as fiber_l2_gradient_lemma5,
    lemma5_operator as lemma5_operator,
    tangent_vector as tangent_vector,
)
from ._metric import (
    end_to_end_metric as end_to_end_metric,
    end_to_end_multiplier as end_to_end_multiplier,
    end_to_end_operator as end_to_end_operator,
    end_to_end_operator_inverse as end_to_end_operator_inverse,
    log_volume_density as log_volume_density,
)
from ._network import (
    DLN as DLN,
    balancedness as balancedness,
    end_to_end as end_to_end,
    forward as forward,
    moments as moments,
    squared_norm as squared_norm,
)
from ._padding import (
    pad as pad,
    padded_balancedness as padded_balancedness,
    padded_layer_norms as padded_layer_norms,
    padded_objective as padded_objective,
    padded_squared_norm as padded_squared_norm,
    unpad as unpad,
)
from ._simulate import Trajectory as Trajectory, simulate as simulate
from ._stiff import NewtonKrylov as NewtonKrylov, Stiff as Stiff
from .sweep import load as load
from ._train import METRICS as METRICS, train as train, TrainResult as TrainResult
from .flows._fiber import schatten_regularizer as schatten_regularizer

__version__ = "0.1.0"
