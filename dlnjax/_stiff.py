"""``Stiff``: an L-stable implicit solver whose Newton systems are solved matrix-free (seed 003; issue "stiff solving").

From a small initialization the flows of a deep linear network are stiff: once the first singular values of the
end-to-end matrix have escaped the origin and settled, they contribute eigenvalues ``~ -a_N(sigma_1^2, sigma_1^2)``
to the Jacobian of the field, while the remaining singular values still escape on a time scale ``~ scale^-(1-2/N)``
(``1/scale`` at ``N = inf``). An explicit solver's step is capped by the first, so its step count grows like the
second. An L-stable implicit Runge--Kutta step is not capped: its step follows the accuracy of the slow motion,
whose time scale shrinks geometrically towards each escape, so the step count grows like ``log(1/scale)``.

`Stiff` integrates with Diffrax's ESDIRK ``Kvaerno5`` (5th order, L-stable, stiffly accurate) by default. Each stage
solves ``F(f) = f - field(t_i, y_i + gamma h f) = 0`` for the stage derivative ``f`` by a chord Newton method
(`NewtonKrylov`): the Jacobian ``I - gamma h J`` is linearised once per step with `jax.linearize` (every product
``J v`` is then a Jacobian-vector product through the field, no ``d^2 x d^2`` matrix is formed) and each Newton
correction is a Krylov solve (Lineax): BiCGStab, right-preconditioned, where the flow supplies a preconditioner
(`dlnjax.flows.AbstractFlow.stiff_preconditioner`), restarted GMRES where it does not. For `dlnjax.flows.EndToEnd`,
whose Jacobian near a fit is ``-rho A_N(X) - N kappa`` up to the loss Hessian's deviation from ``rho I`` (``rho``
its Rayleigh quotient along ``X``), the preconditioner is ``(I + gamma h (rho A_N(X) + N kappa))^-1``, exact for
``E = ½||X - M||²`` and diagonal in the singular bases of ``X``.

Errors are measured per singular value. The flow may supply ``stiff_error_scale`` (`dlnjax.flows.EndToEnd` does:
components in the singular bases of ``X`` relative to the singular values they couple, down to the SVD's
resolution); it is used both by the step-size controller (the wrapped solver returns its error estimate in
tolerance units, for a PID controller at ``rtol = 0, atol = 1``) and by the Newton test. Elementwise (Diffrax's
``atol + rtol |y|``) otherwise. Without it the singular values still at the initialization scale would be
integrated only to ``rtol ||X||``, which misplaces their escape times.

Failure is never silent. Each Newton correction must bring the true residual (recomputed, not Lineax's estimate)
below ``krylov_rtol`` of ``F`` or below ``kappa`` step tolerances, and the Newton iteration must contract to
``kappa`` within ``newton_max_steps``; otherwise the stage fails, Diffrax rejects the step (error estimate ``inf``)
and shrinks it. A run that cannot proceed ends with ``Trajectory.success = False`` (e.g. ``max_steps`` reached).

Derivatives. `jax.grad` (``diffrax.RecursiveCheckpointAdjoint``, the default) and `jax.jvp`
(``diffrax.ForwardMode``) differentiate the discrete solution: each stage's root is differentiated implicitly
(Optimistix's ``ImplicitAdjoint``: ``df = (I - gamma h J)^-1 d[field]``), which is exact for the stage equations
as solved, up to the Newton tolerance. Optimistix solves that linear system with a dense LU, i.e. the backward
(or tangent) pass forms ``I - gamma h J`` for each implicit stage: fine for ``d_N d_0`` up to a few thousand,
not for a 100 x 100 end-to-end matrix (use ``diffrax.BacksolveAdjoint``, the continuous adjoint, there).
"""

from __future__ import annotations

import functools as ft
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jaxtyping import Array, PyTree, Scalar

from ._errors import InputTypeError, OptionError
from ._wrapped_solver import AbstractForwardingSolver

__all__ = ["Stiff", "NewtonKrylov"]


def rms_norm(tree) -> Array:
    """The root-mean-square of all entries of a pytree (complex entries by modulus)."""
    leaves = jtu.tree_leaves(tree)
    sq = sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves)
    n = sum(x.size for x in leaves)
    return jnp.sqrt(sq / max(n, 1))


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(tree)]))


class ElementwiseScale(eqx.Module):
    """``e -> e / (atol + rtol |y|)``: Diffrax's error scale (the default of flows without their own)."""

    y: PyTree
    rtol: float
    atol: float

    def __call__(self, e):
        return jtu.tree_map(lambda a, v: a / (self.atol + self.rtol * jnp.abs(v)), e, self.y)


def error_scale(field, y, rtol, atol):
    """The flow's ``stiff_error_scale(y, rtol, atol)`` if it has one, else `ElementwiseScale`."""
    own = getattr(field, "stiff_error_scale", None)
    scale = None if own is None else own(y, rtol, atol)
    return ElementwiseScale(y, rtol, atol) if scale is None else scale


class _NoAux(eqx.Module):
    fn: Callable

    def __call__(self, y, args):
        out, _ = self.fn(y, args)
        return out


class _State(eqx.Module):
    jac: lx.AbstractLinearOperator
    precond: lx.AbstractLinearOperator | None
    scale: Any  # state error -> tolerance units, at the chord point
    gamma: Array
    diffsize: Scalar
    diffsize_prev: Scalar
    result: optx.RESULTS
    step: Scalar


def _stage_point(args, f):
    """The chord point ``y_partial + gamma prod(f, h)``, its time and ``gamma h`` of Diffrax's f-space stage equation.

    Diffrax passes the root finders of its implicit Runge--Kutta solvers ``(stage_index, diagonal, vf, prod, t_i,
    y_partial, args, control)`` (``diffrax/_solver/runge_kutta.py``: "so that custom nonlinear solvers can
    special-case on the stage").
    """
    if not (isinstance(args, tuple) and len(args) == 8):
        raise InputTypeError(
            "dlnjax.internal.NewtonKrylov: expected Diffrax's implicit Runge-Kutta stage arguments (an 8-tuple); "
            "use it as the root_finder of a diffrax implicit Runge-Kutta solver such as diffrax.Kvaerno5."
        )
    _, diagonal, _, prod, t, y_partial, fargs, control = args
    point = jtu.tree_map(lambda a, b: a + diagonal * b, y_partial, prod(f, control))
    return t, point, fargs, diagonal * control


class NewtonKrylov(optx.AbstractRootFinder):
    """Chord Newton iteration with preconditioned GMRES corrections, for the stages of Diffrax's implicit solvers.

    A stage of an ESDIRK step solves ``F(f) = f - field(t_i, y_i + gamma h f) = 0`` for the stage derivative ``f``.
    As in ``diffrax.VeryChord`` the Jacobian ``I - gamma h J`` is taken once per step, but never materialised: it is
    linearised by `jax.linearize` and applied by Jacobian-vector products, and each correction is a
    right-preconditioned GMRES solve (``lineax.GMRES``), restarted every ``krylov_restart`` steps until its true
    residual is below ``krylov_rtol ||F||`` or below ``kappa`` step tolerances, for at most ``krylov_max_cycles``
    cycles. Newton corrections are measured as state errors ``gamma h delta`` in tolerance units (``field``'s
    ``stiff_error_scale``); the iteration has converged when the predicted remaining error
    ``theta/(1 - theta) |delta_k|`` (``theta`` the contraction rate) is below ``kappa`` (Hairer & Wanner IV.8), and
    fails when it does not contract (``theta >= 1``), has not converged within ``max_steps``, or a correction fails
    (then Diffrax rejects the step and shrinks it). (Predicting failure from an early ``theta``, as Hairer & Wanner
    do, rejected stages that went on to converge superlinearly.)

    **Arguments:**

    - `rtol`, `atol`: the step tolerances (as those of the step-size controller).
    - `field`: the vector field; its ``stiff_preconditioner(t, y, args, gamma_h)`` (an approximation of
      ``(I - gamma_h J(y))^-1`` as a ``lineax.AbstractLinearOperator``, or ``None``) and ``stiff_error_scale``
      are used when present and ``precondition`` is true.
    - `kappa`, `max_steps`, `krylov_rtol`, `krylov_restart`, `krylov_max_cycles`: as above.
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar] = rms_norm
    field: Any = None
    kappa: float = 1e-2
    max_steps: int = eqx.field(static=True, default=10)
    precondition: bool = eqx.field(static=True, default=True)
    krylov: str = eqx.field(static=True, default="auto")
    krylov_rtol: float = 1e-3
    krylov_max_steps: int = eqx.field(static=True, default=40)
    krylov_restart: int = eqx.field(static=True, default=10)

    def init(self, fn, y, args, options, f_struct, aux_struct, tags) -> _State:
        try:
            return options["init_state"]
        except KeyError:
            pass
        jac = lx.linearise(lx.JacobianLinearOperator(_NoAux(fn), y, args, tags=tags))
        t, point, fargs, gamma = _stage_point(args, y)
        pre = getattr(self.field, "stiff_preconditioner", None) if self.precondition else None
        precond = None if pre is None else pre(t, point, fargs, gamma)
        scale = error_scale(self.field if self.precondition else None, point, self.rtol, self.atol)
        dyn, static = eqx.partition((precond, scale), eqx.is_array)
        precond, scale = eqx.combine(jax.lax.stop_gradient(dyn), static)
        real = jnp.finfo(jnp.result_type(*jtu.tree_leaves(y))).dtype
        return _State(
            jac=jac,
            precond=precond,
            scale=scale,
            gamma=jax.lax.stop_gradient(jnp.asarray(gamma, real)),
            diffsize=jnp.array(jnp.inf, real),
            diffsize_prev=jnp.array(1.0, real),
            result=optx.RESULTS.successful,
            step=jnp.array(0),
        )

    def step(self, fn, y, args, options, state: _State, tags):
        fx, aux = fn(y, args)
        diff, ok = self._correction(state, fx)
        new_y = jtu.tree_map(lambda a, b: a - b, y, diff)
        diffsize = self.norm(state.scale(jtu.tree_map(lambda d: state.gamma * d, diff)))
        new_state = eqx.tree_at(
            lambda s: (s.diffsize, s.diffsize_prev, s.result, s.step),
            state,
            (
                diffsize,
                state.diffsize,
                optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.nonlinear_divergence),
                state.step + 1,
            ),
        )
        return new_y, new_state, aux

    def _correction(self, state: _State, fx):
        """``delta`` with ``(I - gamma h J) delta ~ F``, and whether it meets the Krylov tolerance (class docstring).

        The system is solved for ``F / ||F||`` (Lineax's Krylov solvers detect breakdown against absolute thresholds,
        which the tiny residuals of a small initialization would trip) and scaled back. Lineax's own verdict is not
        trusted: the true residual is computed (one more product) and checked."""
        size = rms_norm(fx)
        unit = jnp.where(size > 0, size, 1.0)
        b = jtu.tree_map(lambda v: v / unit, fx)

        def good(r):
            small = (
                self.norm(state.scale(jtu.tree_map(lambda a: state.gamma * unit * a, r)))
                <= self.kappa
            )
            return (rms_norm(r) <= self.krylov_rtol) | small

        opts = {} if state.precond is None else {"preconditioner": state.precond}
        krylov = self.krylov
        if (
            krylov == "auto"
        ):  # measured: BiCGStab is the faster with a preconditioner, GMRES the robust one without
            krylov = "gmres" if state.precond is None else "bicgstab"
        residual = lambda z: jtu.tree_map(lambda a, c: a - c, state.jac.mv(z), b)
        if krylov == "bicgstab":
            solver = lx.BiCGStab(
                rtol=0.0, atol=self.krylov_rtol, norm=rms_norm, max_steps=self.krylov_max_steps
            )
            delta = lx.linear_solve(state.jac, b, solver, options=opts, throw=False).value
            r = residual(delta)
            # Where the Krylov space is one-dimensional (b and the preconditioned operator's image of it parallel,
            # e.g. a full-observation quadratic loss from X0 = c I) Lineax's BiCGStab converges in its half step,
            # s = r - alpha v = 0, and then divides 0/0 (omega = <s, t>/<t, t>: NaN) or not, as round-off decides.
            # The fallback is that half step itself: the residual-minimizing multiple of the preconditioned right-hand
            # side, z0 = c P b with c = <v, b>/<v, v>, v = (I - gamma h J) P b (exact when b is in span{v}).
            # (Starting BiCGStab from it instead cost 5x the steps on completion: measured, not understood.)
            z0 = b if state.precond is None else state.precond.mv(b)
            v = state.jac.mv(z0)
            vdot = ft.partial(jnp.vdot, precision=jax.lax.Precision.HIGHEST)
            vb = sum(vdot(x, y) for x, y in zip(jtu.tree_leaves(v), jtu.tree_leaves(b)))
            vv = jnp.real(sum(vdot(x, x) for x in jtu.tree_leaves(v)))
            c = jnp.where(vv > 0, vb / jnp.where(vv > 0, vv, 1.0), 1.0)
            z0 = jtu.tree_map(lambda x: (c * x).astype(x.dtype), z0)
            r0 = jtu.tree_map(lambda x, y: (c * x).astype(x.dtype) - y, v, b)
            use0 = ~(_all_finite(delta) & good(r)) & good(r0)
            pick = lambda u, v: jtu.tree_map(lambda x, y: jnp.where(use0, x, y), u, v)
            delta, r = pick(z0, delta), pick(r0, r)
        else:
            # GMRES(restart) cycles, each checked on the true residual; rtol = atol = 0: no stopping rule of its own,
            # max_steps=2: its residual pass and one cycle of `restart` steps
            gmres = lx.GMRES(rtol=0.0, atol=0.0, max_steps=2, restart=self.krylov_restart)

            def cond(carry):
                _, r, k = carry
                return (k * self.krylov_restart < self.krylov_max_steps) & ~good(r)

            def body(carry):
                delta, _, k = carry
                delta = lx.linear_solve(
                    state.jac, b, gmres, options={**opts, "y0": delta}, throw=False
                ).value
                return delta, residual(delta), k + 1

            zero = jtu.tree_map(jnp.zeros_like, b)
            delta, r, _ = jax.lax.while_loop(
                cond, body, (zero, jtu.tree_map(jnp.negative, b), jnp.array(0))
            )
        zero_rhs = (
            size == 0
        )  # F = 0 exactly (e.g. a switched-off field): delta = 0, where Krylov would divide 0/0
        delta = jtu.tree_map(lambda v: jnp.where(zero_rhs, 0.0, v * unit), delta)
        return delta, zero_rhs | (good(r) & _all_finite(delta))

    def terminate(self, fn, y, args, options, state: _State, tags):
        k = state.step
        theta = state.diffsize / state.diffsize_prev
        small = state.diffsize < 10 ** (2 - jnp.finfo(state.diffsize.dtype).precision)
        contracting = jnp.isfinite(theta) & (theta < 1)
        remaining = state.diffsize * theta / (1 - jnp.where(contracting, theta, 0.0))
        converged = (k >= 2) & (small | (contracting & (remaining < self.kappa)))
        hopeless = (
            (k >= 2) & ~converged & ~contracting
        )  # (running out of max_steps is Optimistix's own failure)
        bad = state.result != optx.RESULTS.successful
        result = optx.RESULTS.where(
            bad,
            state.result,
            optx.RESULTS.where(
                hopeless, optx.RESULTS.nonlinear_divergence, optx.RESULTS.successful
            ),
        )
        return converged | hopeless | bad, result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


class AbstractDelegatingSolver(dfx.AbstractAdaptiveSolver, AbstractForwardingSolver):
    """A Diffrax solver that forwards everything but ``step`` to the solver it wraps (its field ``solver``),
    its error estimate included (adaptive)."""

    solver: eqx.AbstractVar[dfx.AbstractSolver]


class _ScaledError(AbstractDelegatingSolver):
    """Wraps a Diffrax solver so that its error estimate comes out in tolerance units (``field``'s
    ``stiff_error_scale`` at the step's start), for a step-size controller with ``rtol = 0, atol = 1``."""

    solver: dfx.AbstractSolver
    field: Any
    rtol: float
    atol: float

    @property
    def root_finder(
        self,
    ):  # read by diffeqsolve for implicit solvers (its tolerances are set: nothing to copy)
        return self.solver.root_finder

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, y_error, dense_info, solver_state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        scale = error_scale(self.field, jax.lax.stop_gradient(y0), self.rtol, self.atol)
        y_error = scale(y_error)
        y_error = jtu.tree_map(
            lambda e: jnp.where(result == dfx.RESULTS.successful, e, jnp.inf), y_error
        )
        return y1, y_error, dense_info, solver_state, result


_SCHEMES = {"kvaerno3": dfx.Kvaerno3, "kvaerno4": dfx.Kvaerno4, "kvaerno5": dfx.Kvaerno5}


class Stiff(eqx.Module):
    """The stiff solver strategy of `dlnjax.simulate`: ``simulate(flow, y0, ts, solver=dlnjax.Stiff())``.

    An L-stable ESDIRK scheme of Diffrax (``scheme``: ``"kvaerno5"`` (default), ``"kvaerno4"`` or ``"kvaerno3"``)
    whose stages are solved by `NewtonKrylov` with the flow's preconditioner
    (`dlnjax.flows.AbstractFlow.stiff_preconditioner`), under a PID step-size controller at `simulate`'s
    ``rtol``/``atol`` whose error is measured by the flow's ``stiff_error_scale`` (for `dlnjax.flows.EndToEnd`: in
    the singular bases of ``X``, each component relative to its own singular values, so that a singular value still
    at the initialization scale is integrated to ``rtol`` of itself). See the module docstring for the method,
    failure handling and derivatives.

    **Arguments:**

    - `scheme`: the ESDIRK tableau, a name above.
    - `newton_max_steps`: chord iterations per stage before the stage fails (the step is then rejected and shrunk).
    - `kappa`: Newton stops when its predicted remaining error is below ``kappa`` step tolerances.
    - `krylov_rtol`: each GMRES correction solves to this fraction of the Newton residual (RMS norm).
    - `krylov_restart`, `krylov_max_cycles`: GMRES(``restart``), at most ``max_cycles`` cycles
      (``(restart + 2) * max_cycles`` Jacobian-vector products) before the correction fails.
    - `precondition`: ``True`` (the flow's preconditioner and error scale) or ``False`` (plain GMRES, Diffrax's
      elementwise error scale).
    """

    scheme: str = eqx.field(static=True, default="kvaerno5")
    newton_max_steps: int = eqx.field(static=True, default=10)
    kappa: float = 1e-2
    krylov: str = eqx.field(static=True, default="auto")
    krylov_rtol: float = 1e-3
    krylov_max_steps: int = eqx.field(static=True, default=40)
    krylov_restart: int = eqx.field(static=True, default=10)
    precondition: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.scheme not in _SCHEMES:
            raise OptionError(
                f"Stiff: scheme must be one of {sorted(_SCHEMES)}; got {self.scheme!r}."
            )
        if self.krylov not in ("auto", "bicgstab", "gmres"):
            raise OptionError(
                f"Stiff: krylov must be 'auto', 'bicgstab' or 'gmres'; got {self.krylov!r}."
            )
        for name in ("newton_max_steps", "krylov_restart", "krylov_max_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(f"Stiff: {name} must be a positive integer; got {v!r}.")
        for name in ("kappa", "krylov_rtol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1:
                raise OptionError(f"Stiff: {name} must be a number in (0, 1); got {v!r}.")

    def diffrax_solver(self, field, rtol: float, atol: float) -> dfx.AbstractSolver:
        """The Diffrax solver for the vector field ``field`` at step tolerances ``rtol``/``atol``: its error estimate
        is in tolerance units, so pair it with ``diffrax.PIDController(rtol=0, atol=1)`` (as `simulate` does)."""
        scale_field = field if self.precondition else None
        root_finder = NewtonKrylov(
            rtol=rtol,
            atol=atol,
            field=field,
            kappa=self.kappa,
            max_steps=self.newton_max_steps,
            precondition=self.precondition,
            krylov=self.krylov,
            krylov_rtol=self.krylov_rtol,
            krylov_max_steps=self.krylov_max_steps,
            krylov_restart=self.krylov_restart,
        )
        inner = _SCHEMES[self.scheme](
            root_finder=root_finder, root_find_max_steps=self.newton_max_steps
        )
        return _ScaledError(inner, scale_field, rtol, atol)
