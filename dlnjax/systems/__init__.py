"""Linear systems theory on the footing of the deep linear network (§1.3 of Lindsey & Menon, seed 001;
docs/theory.md §13).

Realizations ``(A, B, C)`` of ``x' = A x + B u, y = C x`` (`LinearSystem`), the ``GL(n)`` action (1.10) and its orbit,
the moment map of the unitary action (`moment_map`), balancing flows on the orbit (`OrbitL2`, `OrbitKirwanNess`,
`HelmkeMoore`), norm-balanced realizations (`norm_balanced`), Gramians and balanced truncation
(`hankel_singular_values`, `balanced_truncation`), and training of linear state-space models (`MarkovLoss`, `fit`,
`SystemGradient`, `SystemRegularized`, `SystemLangevin` with `dlnjax.simulate`).
"""

from ._balance import Balancing as Balancing
from ._balance import norm_balanced as norm_balanced
from ._balance import norm_balancing as norm_balancing
from ._flows import HelmkeMoore as HelmkeMoore
from ._flows import OrbitKirwanNess as OrbitKirwanNess
from ._flows import OrbitL2 as OrbitL2
from ._flows import SystemGradient as SystemGradient
from ._flows import SystemLangevin as SystemLangevin
from ._flows import SystemRegularized as SystemRegularized
from ._flows import system_gradient as system_gradient
from ._gramians import gramian_factors as gramian_factors
from ._gramians import gramians as gramians
from ._gramians import h2_norm as h2_norm
from ._gramians import hankel_singular_values as hankel_singular_values
from ._gramians import lyapunov as lyapunov
from ._gramians import lyapunov_factor as lyapunov_factor
from ._gramians import psd_factor as psd_factor
from ._moment import moment_map as moment_map
from ._moment import orbit_normal_matrix as orbit_normal_matrix
from ._moment import orbit_normal_operator as orbit_normal_operator
from ._moment import orbit_preconditioner as orbit_preconditioner
from ._moment import orbit_solve as orbit_solve
from ._moment import orbit_tangent_projection as orbit_tangent_projection
from ._system import LinearSystem as LinearSystem
from ._system import act as act
from ._system import impulse_response as impulse_response
from ._system import markov_parameters as markov_parameters
from ._system import orbit_tangent as orbit_tangent
from ._system import orbit_tangent_adjoint as orbit_tangent_adjoint
from ._system import random_system as random_system
from ._system import system_inner as system_inner
from ._system import system_sq_norm as system_sq_norm
from ._system import transfer_function as transfer_function
from ._training import FitResult as FitResult
from ._training import MarkovLoss as MarkovLoss
from ._training import fit as fit
from ._truncation import Truncation as Truncation
from ._truncation import balanced_truncation as balanced_truncation
from ._truncation import difference as difference
from ._truncation import hinf_norm as hinf_norm
from ._truncation import norm_balanced_truncation as norm_balanced_truncation
from ._truncation import truncate as truncate
