"""The flows of the deep linear network (seed 001 and docs/theory.md §4).

Each flow is an Equinox module with ``flow(t, net, args) -> velocity``, a `dlnjax.DLN` of the
same widths, so it can be handed to `dlnjax.simulate` or used directly as a Diffrax vector field.
"""

from ._base import AbstractFlow as AbstractFlow
from ._base import AbstractStochasticFlow as AbstractStochasticFlow
from ._end_to_end import EndToEnd as EndToEnd
from ._fiber import FiberL2 as FiberL2
from ._fiber import FiberSchatten as FiberSchatten
from ._fiber_langevin import FiberLangevin as FiberLangevin
from ._gradient import Gradient as Gradient
from ._gradient import Regularized as Regularized
from ._kirwan_ness import KirwanNess as KirwanNess
from ._langevin import Langevin as Langevin
from ._masked import Masked as Masked
from ._masked import MaskedStochastic as MaskedStochastic
