"""dlnjax: a JAX-accelerated, differentiable simulator of the training dynamics of deep linear networks.

The network state (`DLN`), its geometry (moments, fibers, projections), the flows of Lindsey &
Menon (seed 001) in `dlnjax.flows`, and `simulate` to integrate them with Diffrax.
"""

from . import flows as flows, losses as losses
from ._activations import Activation as Activation
from ._fiber import (
    balanced_preconditioner as balanced_preconditioner,
    default_fiber_solver as default_fiber_solver,
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
from ._network import (
    DLN as DLN,
    balancedness as balancedness,
    end_to_end as end_to_end,
    forward as forward,
    moments as moments,
    squared_norm as squared_norm,
)
from ._simulate import Trajectory as Trajectory, simulate as simulate
from .flows._fiber import schatten_regularizer as schatten_regularizer

__version__ = "0.1.0"
