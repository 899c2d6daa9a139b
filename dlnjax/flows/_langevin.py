from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import lineax as lx

from .._errors import OptionError, UnsupportedError
from .._geometry import network_gradient
from .._network import DLN
from ._base import AbstractStochasticFlow


class Langevin(AbstractStochasticFlow):
    """Langevin dynamics of the regularized loss, ``dW = -(grad_W E + kappa W) dt + sqrt(2/beta) dB`` ((4.4) of seed 001).

    Real weights only (``B`` is a standard Brownian motion on every entry). Calling the flow gives the
    drift; ``diffusion`` the (additive) noise coefficient. `dlnjax.simulate` integrates it as an Ito SDE
    when given ``key=`` and a step ``dt0``. Facts (docs/theory.md §4): for every loss,
    ``d/dt E[G_k] = -2 kappa E[G_k] + (2/beta)(d_{k-1} - d_{k+1}) I``; for ``E = 0`` the law tends to
    the Gaussian with variance ``1/(beta kappa)`` per entry, density ``∝ exp(-beta kappa ||W||^2 / 2)``.
    (The density printed as (4.3) in seed 001, ``∝ exp(-beta kappa ||W||^2)``, has half that variance: a
    Fokker-Planck computation, tested in ``tests/test_langevin.py``, shows it is stationary only for complex
    weights driven by complex noise with ``E|dB|^2 = dt`` per entry.)
    """

    loss: Callable | None
    kappa: float
    beta: float

    def __check_init__(self):
        for name in ("kappa", "beta"):
            v = getattr(self, name)
            if isinstance(v, (int, float)) and not v > 0:
                raise OptionError(f"Langevin: {name} must be positive; got {v}.")

    def __call__(self, t, net: DLN, args=None) -> DLN:
        if self.loss is None:
            return jax.tree_util.tree_map(lambda w: -self.kappa * w, net)
        g = network_gradient(self.loss, net)
        return jax.tree_util.tree_map(lambda gk, w: -gk - self.kappa * w, g, net)

    def diffusion(self, t, net: DLN, args=None) -> lx.AbstractLinearOperator:
        if jnp.iscomplexobj(net.first):
            raise UnsupportedError("Langevin: only real weights are supported.")
        # Noise on the weights only, never on the zero padding of non-uniform widths.
        scale = jax.tree_util.tree_map(lambda m: jnp.sqrt(2.0 / self.beta) * m, net.mask())
        struct = jax.eval_shape(lambda: net)
        return lx.FunctionLinearOperator(
            lambda db: jax.tree_util.tree_map(jnp.multiply, scale, db), struct
        )
