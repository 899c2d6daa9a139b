"""Test oracles and solver internals: importable, documented, but not part of the user-facing `dlnjax` namespace.

These are for tests, benchmarks and extensions of the package; their signatures may change between
versions without notice.

**Reference implementations (oracles).** Independent, slower routes to quantities the package computes
otherwise, kept for cross-checks:

- `fiber_l2_gradient_lemma5`, `lemma5_operator`, `tangent_vector`: the block-tridiagonal system of Lemma 5
  of Lindsey & Menon (seed 001), an independent route to the fiber gradient (``dlnjax.fiber_l2_gradient``).
- `aligned_singular_values`: the exact decoupled scalar flows of seed 003 for aligned problems, the
  reference of the stiff solver's tests and benchmarks.

**Solver internals.**

- `NewtonKrylov`: the matrix-free chord Newton root finder inside `dlnjax.Stiff`.
- `AbstractDelegatingSolver`: the base of Diffrax solvers that wrap another one (``Stiff``'s error
  scaling, benchmarks' variants).
- `ElementwiseScale`, `error_scale`, `rms_norm`: the error measure of `dlnjax.Stiff`.
- `lanczos_top`: the Lanczos iteration behind `dlnjax.sharpness`.
- `mask_arrays`, `gram_pairs`: the mask builder and the Gram pairs behind `dlnjax.DLN.mask`, the moments
  and the padded quantities.
- `QUANTITIES`, `Quantity`, `Run`, `objective`: the table of recorded quantities shared by `dlnjax.train`
  and the sweeps.
"""

from ._aligned import aligned_singular_values as aligned_singular_values
from ._lanczos import lanczos_top as lanczos_top
from ._lemma5 import fiber_l2_gradient_lemma5 as fiber_l2_gradient_lemma5
from ._lemma5 import lemma5_operator as lemma5_operator
from ._lemma5 import tangent_vector as tangent_vector
from ._network import gram_pairs as gram_pairs
from ._network import mask_arrays as mask_arrays
from ._quantities import QUANTITIES as QUANTITIES
from ._quantities import Quantity as Quantity
from ._quantities import Run as Run
from ._quantities import objective as objective
from ._stiff import AbstractDelegatingSolver as AbstractDelegatingSolver
from ._stiff import ElementwiseScale as ElementwiseScale
from ._stiff import NewtonKrylov as NewtonKrylov
from ._stiff import error_scale as error_scale
from ._stiff import rms_norm as rms_norm

MOVED = (
    "aligned_singular_values",
    "fiber_l2_gradient_lemma5",
    "lemma5_operator",
    "tangent_vector",
    "NewtonKrylov",
)
"""The names that `dlnjax` exported before they moved here (``dlnjax.NAME`` still resolves, with a
``DeprecationWarning``)."""
