"""``simulate``: integrate a flow with Diffrax (docs/theory.md §4)."""

from __future__ import annotations

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Bool, PRNGKeyArray, PyTree, Real

from ._errors import InputTypeError, OptionError, ShapeError, UnsupportedError
from ._progress import diffrax_meter
from ._stiff import Stiff, rms_norm
from .flows._base import AbstractStochasticFlow

__all__ = ["Trajectory", "simulate"]


class Trajectory(eqx.Module):
    """The result of `simulate`.

    **Attributes:**

    - `ts`: the save times.
    - `ys`: the states at ``ts``; for a `DLN`, a `DLN` whose arrays have a leading time axis.
    - `success`: ``True`` iff the solver succeeded and every saved value is finite. A failed or
      blown-up solve is reported here (never silently as NaNs): entries past the failure are
      whatever Diffrax saved (``inf``), so check this flag.
    - `result`: the Diffrax ``RESULTS`` code.
    - `stats`: solver statistics (``num_steps``, ``num_accepted_steps``, ``num_rejected_steps``, ...).
    """

    ts: Real[Array, " T"]
    ys: PyTree
    success: Bool[Array, ""]
    result: dfx.RESULTS
    stats: dict[str, Any]

    def __getitem__(self, i):
        """The state saved at index ``i`` of ``ts``."""
        return jax.tree_util.tree_map(lambda y: y[i], self.ys)


def _leaf_dtypes(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.zeros((), jnp.result_type(*leaves)) if leaves else jnp.zeros(())


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def simulate(
    flow,
    y0: PyTree,
    ts: Real[Array, " T"],
    *,
    args: Any = None,
    solver: dfx.AbstractSolver | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    dt0: float | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int | None = 16**4,
    adjoint: dfx.AbstractAdjoint | None = None,
    progress: bool = False,
    key: PRNGKeyArray | None = None,
) -> Trajectory:
    """Integrate ``dy/dt = flow(t, y, args)`` from ``ts[0]`` to ``ts[-1]``, saving at ``ts``.

    A thin wrapper of ``diffrax.diffeqsolve``: ``flow`` is any vector field (typically one of
    `dlnjax.flows`), ``y0`` a `DLN` (or any pytree). Adaptive by default: ``solver`` defaults to
    ``diffrax.Tsit5()`` with a PID controller at ``rtol``/``atol`` (ignored when ``dt0`` is given
    with a non-adaptive ``stepsize_controller``). ``adjoint`` defaults to Diffrax's
    ``RecursiveCheckpointAdjoint`` so ``jax.grad`` works through the solve; ``progress=True``
    shows a progress bar on a terminal (``diffrax.TqdmProgressMeter``), elsewhere (a log, CI,
    Jupyter) a timestamped line every few seconds (`dlnjax._progress.diffrax_meter`).

    Stochastic flows (`dlnjax.flows.AbstractStochasticFlow`, e.g. `dlnjax.flows.Langevin`) are
    integrated as Ito SDEs driven by a ``diffrax.VirtualBrownianTree`` drawn from ``key``
    (required), with a fixed step ``dt0`` (required) and the flow's ``default_solver()`` by default:
    ``diffrax.Heun()`` (for additive noise Ito and Stratonovich agree), or for `dlnjax.flows.FiberLangevin`
    (a Stratonovich SDE on a fiber) ``dlnjax.FiberProjected(diffrax.Heun())``, whose steps are projected back
    onto the fiber. ``jax.vmap`` over keys gives independent paths.

    Works under ``jax.jit``, ``jax.vmap`` (over ``y0``, batches of initial conditions) and
    ``jax.grad``. Never raises on a failed solve: see `Trajectory.success`. Invalid arguments
    (non-increasing ``ts``, non-finite ``y0``) raise.

    **Differentiation.** Outcomes of the trajectory differentiate with respect to ``y0``, ``args``, every
    array inside ``flow`` (``kappa``, ``beta``, the loss data), and the save times ``ts`` (the horizon
    ``ts[-1]``). The ``adjoint`` decides how:

    - ``diffrax.RecursiveCheckpointAdjoint()`` (default): reverse mode (``jax.grad``, ``jax.vjp``) through
      the solver's own steps, with checkpointing; the exact derivative of the discrete solution (with an
      adaptive controller, at the step sizes taken: Diffrax does not differentiate the step-size choice).
      ``jax.jvp`` raises with it ("can't apply forward-mode autodiff (jvp) to a custom_vjp function").
      Memory: ``O(sqrt(max_steps))`` checkpoints of the solver state (Equinox's online checkpointing).
      Time: about 6 forward solves for a gradient of a gradient flow with Tsit5 (``benchmarks/adjoints.py``):
      the forward sweep, one recomputation of nearly every step from the checkpoints, and per reverse step the
      stages evaluated twice more and transposed (Diffrax's Runge-Kutta step runs its stages in a nested
      checkpointed loop). ``RecursiveCheckpointAdjoint(checkpoints=c)`` keeps ``c`` checkpoints instead, the
      same derivative; it saves only the recomputation of ``c`` steps (``checkpoints=max_steps``: none, at
      memory linear in the steps).
    - ``diffrax.ForwardMode()``: forward mode (``jax.jvp``, ``jax.jacfwd``), cheaper with few parameters;
      ``jax.grad`` raises with it ("Reverse-mode differentiation does not work for lax.while_loop").
    - ``diffrax.BacksolveAdjoint()``: the continuous adjoint, solved backwards in time (approximate, to
      the solver's tolerance; low memory). Differentiates only ``y0``, ``args`` and ``flow``'s arrays, not
      ``ts`` (raises ``ValueError``), nor arrays a ``flow`` captures in a Python closure (JAX raises
      ``CustomVJPException``): put the parameters in the flow's fields (an Equinox module) instead.
      Complex states are supported, complex arrays inside ``flow`` or ``args`` are not (raises ``ValueError``).
      Stochastic flows: Stratonovich solvers only (the default ``Heun``; with additive noise the Ito and
      Stratonovich solutions agree).

    The linear solves of the fiber flows differentiate implicitly (Lineax), in both modes.

    **Stiff flows.** ``solver=dlnjax.Stiff()`` integrates with an L-stable ESDIRK scheme whose Newton systems are solved
    matrix-free (`dlnjax.Stiff`): use it from small initializations, on long plateaus and at infinite depth, where an
    explicit solver's step is capped by the settled singular values (its step count grows like ``1/scale`` at
    ``N = inf``, Stiff's like ``log(1/scale)`` on aligned problems); keep the default Tsit5 for moderate scales, where
    its cheaper steps win, and for large matrices, where a Stiff step costs many field evaluations (crossover and
    figures: ``benchmarks/README.md``, ``benchmarks/stiff.py``, the docs' simulate page). With Stiff the
    error is measured by the flow's ``stiff_error_scale`` (for `dlnjax.flows.EndToEnd`, per singular value), ``dt0``
    and ``stepsize_controller`` are not accepted, and ``atol`` should lie far below ``rtol`` times the
    initialization scale. Derivatives through a Stiff solve: see `dlnjax.Stiff`.
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ShapeError(
            f"simulate: ts must be a 1-D array of at least two save times; got shape {ts.shape}."
        )
    if not jnp.issubdtype(ts.dtype, jnp.floating):
        ts = ts.astype(float)
    ts = eqx.error_if(
        ts,
        jnp.any(jnp.diff(ts) < 0) | ~jnp.all(jnp.isfinite(ts)),
        "simulate: ts must be finite and non-decreasing.",
    )
    y0 = eqx.error_if(
        y0, ~_all_finite(y0), "simulate: the initial condition y0 holds non-finite values."
    )
    terms, solver, stepsize_controller = _terms_and_solver(
        flow, y0, ts, solver, key, dt0, stepsize_controller, rtol, atol
    )
    adjoint, ts = _checked_adjoint(adjoint, flow, args, ts)
    meter = (
        diffrax_meter() if progress else dfx.NoProgressMeter()
    )  # a bar on a terminal, else lines
    sol = _diffeqsolve(
        terms, solver, ts, dt0, _to_real(y0), args, stepsize_controller, max_steps, adjoint, meter
    )
    ys = _from_real(sol.ys, y0)
    success = (sol.result == dfx.RESULTS.successful) & _all_finite(ys)
    return Trajectory(ts=sol.ts, ys=ys, success=success, result=sol.result, stats=dict(sol.stats))


def _terms_and_solver(flow, y0, ts, solver, key, dt0, stepsize_controller, rtol, atol):
    """The Diffrax terms, solver and step-size controller of `simulate` (checked against the flow's kind)."""
    stochastic = isinstance(flow, AbstractStochasticFlow)
    if stochastic:
        if key is None or dt0 is None:
            raise OptionError(
                "simulate: a stochastic flow needs key= (a PRNG key) and a step dt0=."
            )
        if jnp.iscomplexobj(_leaf_dtypes(y0)):
            raise UnsupportedError(
                "simulate: stochastic flows support only real weights (a real y0)."
            )
        bm = dfx.VirtualBrownianTree(
            ts[0], ts[-1], tol=dt0 / 2, shape=jax.eval_shape(lambda: y0), key=key
        )
        terms = dfx.MultiTerm(dfx.ODETerm(flow), dfx.ControlTerm(flow.diffusion, bm))
        solver = flow.default_solver() if solver is None else solver
    else:
        if key is not None:
            raise OptionError(
                "simulate: key= is only for stochastic flows; this flow has no diffusion."
            )
        like = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), y0
        )
        field = _RealView(flow, like) if jnp.iscomplexobj(_leaf_dtypes(y0)) else flow
        terms = dfx.ODETerm(field)
        solver = dfx.Tsit5() if solver is None else solver
        if isinstance(solver, Stiff):
            if stepsize_controller is not None or dt0 is not None:
                raise OptionError(
                    "simulate: dlnjax.Stiff() chooses its steps adaptively at rtol/atol; do not pass dt0 or "
                    "stepsize_controller with it (for fixed steps use e.g. diffrax.Kvaerno5())."
                )
            solver = solver.diffrax_solver(field, rtol, atol)
            stepsize_controller = dfx.PIDController(rtol=0.0, atol=1.0, norm=rms_norm)
    if isinstance(solver, Stiff):
        raise UnsupportedError(
            "simulate: dlnjax.Stiff() is for deterministic flows; this flow is stochastic (use e.g. diffrax.Heun())."
        )
    if stepsize_controller is None:
        stepsize_controller = (
            dfx.PIDController(rtol=rtol, atol=atol) if dt0 is None else dfx.ConstantStepSize()
        )
    return terms, solver, stepsize_controller


def _checked_adjoint(adjoint, flow, args, ts):
    """The adjoint of `simulate` (default ``RecursiveCheckpointAdjoint``), checked; ``ts`` made non-differentiable
    for ``BacksolveAdjoint``."""
    if adjoint is None:
        adjoint = dfx.RecursiveCheckpointAdjoint()
    elif not isinstance(adjoint, dfx.AbstractAdjoint):
        raise InputTypeError(
            f"simulate: adjoint must be a diffrax adjoint (e.g. diffrax.ForwardMode()); got {type(adjoint).__name__}."
        )
    if isinstance(adjoint, dfx.BacksolveAdjoint):
        inexact = jax.tree_util.tree_leaves(eqx.filter((flow, args), eqx.is_inexact_array))
        if any(jnp.iscomplexobj(x) for x in inexact):
            # Diffrax's adjoint equations would carry complex parameter cotangents through the real view.
            raise UnsupportedError(
                "simulate: adjoint=diffrax.BacksolveAdjoint() does not support complex arrays inside flow or args "
                "(e.g. complex loss data); use the default RecursiveCheckpointAdjoint()."
            )
        ts = _nondifferentiable_ts(ts)
    return adjoint, ts


# Diffrax's complex support is partial (no initial step-size selection, a warning), so complex states
# are integrated as real ones: each complex leaf becomes a real array with a trailing (re, im) axis.
def _to_real(tree):
    f = lambda x: jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1) if jnp.iscomplexobj(x) else x
    return jax.tree_util.tree_map(f, tree)


def _from_real(tree, like):
    f = lambda x, l: jax.lax.complex(x[..., 0], x[..., 1]) if jnp.iscomplexobj(l) else x
    return jax.tree_util.tree_map(f, tree, like)


class _RealView(eqx.Module):
    """A vector field on the real view of a (possibly complex) state."""

    fn: Any
    like: PyTree = eqx.field(
        static=True
    )  # shapes and dtypes only: no leaves (BacksolveAdjoint maps over the term's leaves)

    def __call__(self, t, y, args):
        return _to_real(self.fn(t, _from_real(y, self.like), args))

    def stiff_error_scale(self, y, rtol, atol):
        own = getattr(self.fn, "stiff_error_scale", None)
        scale = None if own is None else own(_from_real(y, self.like), rtol, atol)
        return None if scale is None else _RealError(scale, self.like)

    def stiff_preconditioner(self, t, y, args, gamma):
        pre = getattr(self.fn, "stiff_preconditioner", None)
        op = None if pre is None else pre(t, _from_real(y, self.like), args, gamma)
        if op is None:
            return None
        real = jax.eval_shape(lambda: y)
        return lx.FunctionLinearOperator(_RealOperator(op, self.like), real)


class _RealError(eqx.Module):
    """An error scale of a complex state, applied to its real view."""

    scale: Any
    like: PyTree = eqx.field(static=True)

    def __call__(self, e):
        return _to_real(self.scale(_from_real(e, self.like)))


class _RealOperator(eqx.Module):
    """A (real-linear) operator on a complex state, acting on its real view."""

    op: Any
    like: PyTree = eqx.field(static=True)

    def __call__(self, y):
        return _to_real(self.op.mv(_from_real(y, self.like)))


# BacksolveAdjoint differentiates y0, args and the terms only; a tangent on t0, t1 or the save times
# would otherwise fail deep inside Diffrax ("Unexpected tangent").
@jax.custom_jvp
def _nondifferentiable_ts(ts):
    return ts


@_nondifferentiable_ts.defjvp
def _nondifferentiable_ts_jvp(primals, tangents):
    raise UnsupportedError(
        "simulate: adjoint=diffrax.BacksolveAdjoint() cannot differentiate with respect to the save times ts "
        "(e.g. the horizon ts[-1]); use the default RecursiveCheckpointAdjoint() or diffrax.ForwardMode()."
    )


def _diffeqsolve(terms, solver, ts, dt0, y0, args, stepsize_controller, max_steps, adjoint, meter):
    return dfx.diffeqsolve(
        terms,
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=dt0,
        y0=y0,
        args=args,
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=False,
        progress_meter=meter,
    )
