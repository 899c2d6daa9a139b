"""``train``: discrete-time training of a network with any Optax optimizer, as one compiled ``lax.scan``.

The objective is ``E(W) = loss(X(W))`` for a linear network, or the data loss of the network function
``f(x) = W_N phi(... phi(W_1 x))`` for a nonlinear one (`dlnjax.network_loss`; docs/theory.md §1, §6), plus
optionally the weight decay ``kappa/2 ||W||^2`` of the regularized loss (4.1) of Lindsey & Menon
(seed 001). With ``optax.sgd(eta)`` this is the gradient descent ``W <- W - eta grad E(W)`` whose
large-step behaviour (sharpness settling at or below ``2/eta``) Marion & Chizat study (seed 004, §5;
docs/theory.md §7). Batching is the caller's ``jax.vmap``: over initial networks, over data, or over
hyperparameters (a learning rate inside ``optax.sgd``, an initialization scale inside a constructor).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Int, PyTree

from ._chain_grad import fast_value_and_grad
from ._errors import InputTypeError, OptionError, ShapeError, UnsupportedError
from ._network import DLN, squared_norm
from ._quantities import QUANTITIES, Run, objective

__all__ = ["TrainResult", "train", "METRICS"]

METRICS = tuple(name for name, q in QUANTITIES.items() if q.train)
"""The built-in metric names of `train` (see its docstring): the entries of the table of recorded
quantities (`dlnjax._quantities`) that `train` records, shared with the sweeps."""


class TrainResult(eqx.Module):
    """The result of `train`. Under ``jax.vmap`` every attribute gains the leading batch axes.

    **Attributes:**

    - `net`: the final network. For a diverged run, the last accepted iterate ``W_{s-1}``, where
      ``s = diverged_at``: always finite, with finite objective below the divergence limit.
    - `history`: a dict ``name -> array`` (or pytree of arrays, for a user metric) whose leading axis
      runs over the recorded steps `steps`. Entries recorded at steps ``>= diverged_at`` of a diverged run
      are NaN (integer-valued user metrics hold the value at the frozen network instead).
    - `steps`: the recorded step indices ``0, every, 2 every, ..., steps`` (int32).
    - `diverged`: ``True`` iff the run diverged (see `train`).
    - `diverged_at`: the first step ``s`` whose iterate ``W_s`` was rejected; ``-1`` if the run did not diverge.
    """

    net: DLN
    history: dict[str, PyTree]
    steps: Int[Array, " T"]
    diverged: Bool[Array, ""]
    diverged_at: Int[Array, ""]


def _value_and_grad(loss, net0: DLN, kappa, fast: bool) -> Callable[[DLN], tuple[Array, DLN]]:
    """``net -> (objective, gradient)`` of one training step (the gradient for ``Re Tr(A^* B)``).

    With ``fast``, small real linear networks with a loss of the library take the fast path (`dlnjax._chain_grad`: the chain in
    its cheaper association, batch axis last under ``jax.vmap``, a `Regression` in its covariance form); every
    other case ``jax.value_and_grad`` of `objective`. The two agree to rounding.
    """
    fast = fast_value_and_grad(loss, net0) if fast else None
    if fast is None:

        def generic(net):
            value, g = jax.value_and_grad(lambda n: objective(loss, n, kappa))(net)
            return value, jax.tree_util.tree_map(jnp.conj, g)

        return generic

    def regularized(net):
        value, g = fast(net)
        if kappa is None:
            return value, g
        value = value + 0.5 * kappa * squared_norm(net)
        return value, jax.tree_util.tree_map(lambda a, w: a + kappa * w, g, net)

    return regularized


def _tree_select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _check_args(
    loss, net0, optimizer, steps, every, metrics, metric_fns, divergence_threshold, mask
):
    if not isinstance(net0, DLN):
        raise InputTypeError(f"train: net0 must be a dlnjax.DLN; got {type(net0).__name__}.")
    if mask is not None:
        if not isinstance(mask, DLN):
            raise InputTypeError(
                f"train: mask must be a dlnjax.DLN of 0/1 entries (or None); got {type(mask).__name__}."
            )
        if mask.widths != net0.widths:
            raise ShapeError(
                f"train: mask must have the widths of net0, {net0.widths}; got {mask.widths}."
            )
        shapes = lambda n: [jnp.shape(a) for a in n.arrays()]
        if shapes(mask) != shapes(net0):
            raise ShapeError(
                f"train: mask must have the array shapes of net0, {shapes(net0)}; got {shapes(mask)} "
                "(for a batch, map over both with jax.vmap)."
            )
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise InputTypeError(
            f"train: optimizer must be an optax.GradientTransformation (with init and update); got {type(optimizer).__name__}."
        )
    for name, value in (("steps", steps), ("every", every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputTypeError(
                f"train: {name} must be a Python int (it is static: it sets the compiled loop); got {value!r}."
            )
    if steps < 1:
        raise OptionError(f"train: steps must be >= 1; got {steps}.")
    if every < 1:
        raise OptionError(f"train: every must be >= 1; got {every}.")
    if steps % every != 0:
        raise OptionError(
            f"train: every must divide steps so that the final step is recorded; got steps={steps}, every={every}."
        )
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    for name in metrics:
        if name not in METRICS:
            raise OptionError(
                f"train: unknown metric {name!r}; the built-in metrics are {METRICS} (pass your own functions as metric_fns=)."
            )
    if len(set(metrics)) != len(metrics):
        raise OptionError(f"train: metrics lists a name twice: {metrics}.")
    if "test_error" in metrics:
        if getattr(loss, "truth", None) is None:
            raise UnsupportedError(
                f"train: metric 'test_error' needs a loss with a ground truth (truth=); {type(loss).__name__} has none."
            )
        if not net0.activation.is_linear:
            raise UnsupportedError(
                f"train: metric 'test_error' compares the end-to-end matrix with loss.truth, but this network has "
                f"activation {net0.activation.name!r} and no end-to-end matrix."
            )
    metric_fns = dict(metric_fns or {})
    for name, fn in metric_fns.items():
        if not isinstance(name, str) or not callable(fn):
            raise InputTypeError(
                f"train: metric_fns must map names (str) to functions fn(net); got {name!r}: {fn!r}."
            )
        if name in metrics:
            raise OptionError(
                f"train: metric {name!r} is both built in (metrics=) and user-given (metric_fns=)."
            )
    if divergence_threshold is not None and not isinstance(divergence_threshold, jax.core.Tracer):
        if not np.all(np.asarray(divergence_threshold) > 0):
            raise OptionError(
                f"train: divergence_threshold must be positive (or None); got {divergence_threshold!r}."
            )
    return metrics, metric_fns


def train(
    loss: Callable,
    net0: DLN,
    optimizer: optax.GradientTransformation,
    steps: int,
    *,
    every: int = 1,
    metrics: Sequence[str] = ("loss",),
    metric_fns: Mapping[str, Callable[[DLN], PyTree]] | None = None,
    kappa: float | Array | None = None,
    divergence_threshold: float | Array | None = 1e6,
    mask: DLN | None = None,
    fast: bool = True,
) -> TrainResult:
    """Train ``net0`` for ``steps`` optimizer steps on the objective ``E(W) + kappa/2 ||W||^2``.

    ``E(W) = dlnjax.network_loss(loss, W)`` (docs/theory.md §1; for a nonlinear network the data loss of its
    network function, docs/theory.md §6) and ``kappa/2 ||W||^2`` is the weight decay of the regularized loss
    (4.1) of seed 001 (omitted when ``kappa`` is ``None`` or ``0``). Each step computes the gradient
    ``g = grad_W`` of the objective for the inner product ``Re Tr(A^* B)`` (the conjugate of
    ``jax.grad`` for complex weights, as `dlnjax.network_gradient`), asks ``optimizer.update`` for the
    update, multiplies it by ``net.mask()`` (the zero padding of non-uniform widths stays exactly zero,
    whatever the optimizer) and applies it. With ``optax.sgd(eta)`` this is gradient descent
    ``W_{t+1} = W_t - eta g(W_t)``, the algorithm of seed 004's experiments (§5 of Marion & Chizat).

    The whole run is one jit-compiled ``lax.scan`` (``steps`` and ``every`` are static); it works
    under ``jax.vmap`` over ``net0``, over the loss data, over ``kappa`` and ``divergence_threshold``,
    and over hyperparameters that the optimizer closes over::

        results = jax.vmap(lambda lr: dlnjax.train(loss, net0, optax.sgd(lr), 100))(lrs)

    **Frozen entries.** ``mask`` (a `DLN` of the widths of ``net0``, entries 0 or 1; may be traced, so one
    compiled program serves every mask) multiplies every update too, so the entries where it is 0 never
    move; ``"grad_norm"`` is then the norm of the gradient on the entries where it is 1. The optimizer
    still sees the full gradient (state such as momentum on frozen entries is simply never applied). This is
    how a padded network of `dlnjax.pad` trains as its real network: ``train(loss, padded, opt, steps,
    mask=live)`` follows, after `dlnjax.unpad`, the trajectory of ``train(loss, net, opt, steps)``. The other
    built-in metrics see the whole network (for a padded one ``"squared_norm"``, ``"layer_norms"``,
    ``"balancedness"`` and ``"objective"`` count the frozen layers; pass ``metric_fns`` with
    `dlnjax.padded_layer_norms` and friends instead).

    Calling `train` again with the same optimizer object (and the same metric functions) reuses the
    compiled program; a new ``optax.sgd(lr)`` per call compiles anew, so sweep with ``vmap``.

    **Recording.** The metrics are evaluated on the iterates ``W_0, W_every, W_2every, ..., W_steps``
    (``every`` must divide ``steps``) and stored in ``result.history[name]`` with a leading axis over
    those steps (``result.steps``). Built-in ``metrics`` (names in `dlnjax.METRICS`):

    - ``"loss"``: ``E(W)``; ``"objective"``: ``E(W) + kappa/2 ||W||^2``;
    - ``"test_error"``: ``loss.test_error(X(W))``, the relative distance of the end-to-end matrix to
      ``loss.truth`` (linear networks, losses built with ``truth=``);
    - ``"balancedness"``: `dlnjax.balancedness` (``||G||_F / ||W||^2``; for a homogeneous network the
      quantity whose diagonal gradient flow conserves, seed 002); ``"squared_norm"``: ``||W||^2``;
    - ``"grad_norm"``: ``||g||``, the norm of the gradient of the objective;
    - ``"layer_norms"``: `dlnjax.layer_norms`, the squared norms ``(||W_1||_F^2, ..., ||W_N||_F^2)``, shape ``(N,)``.

    ``metric_fns`` adds user metrics: a dict ``name -> fn(net)`` returning a pytree of arrays, e.g.
    ``{"sharpness": lambda n: dlnjax.sharpness(loss, n)}`` (seed 004's ``lambda_max`` of the Hessian).

    **Divergence** is a per-run flag, not an error. The iterate ``W_{t+1}`` is rejected when its
    objective is non-finite (so are non-finite weights) or exceeds ``divergence_threshold``
    times the objective of ``W_0`` (a relative limit; ``None``, or ``W_0`` with objective ``0``: only
    non-finite values count). From the first rejection at step ``s`` on, the run is frozen at
    ``W_{s-1}`` (``result.net``, finite), ``result.diverged`` is ``True``, ``result.diverged_at == s``,
    and floating-point history entries at steps ``>= s`` are NaN. ``W_0`` itself is checked the same
    way (then ``s = 0`` and ``result.net`` is ``W_0``). Seed 004 counts such runs as failures (the
    divergence probability of its Figure 2).

    **Fast path** (``fast=True``, the default): for a linear network with real weights of widths ``<= 8`` and a loss
    of `dlnjax.losses`, each step's gradient is computed by ``dlnjax._chain_grad`` (the chain in its cheaper
    association, the backward pass written out, the batch axis last under ``jax.vmap``, a `Regression` in its
    covariance form), ~3.5x faster per run-step on seed 004's network (benchmarks/README.md,
    ``train_throughput.py``); results agree with ``fast=False`` (``jax.value_and_grad`` of the objective) to
    rounding. Derivatives *through* `train` (``jax.grad``, ``jax.jacfwd``, ``jax.jacrev`` with respect to the
    data, the initialization or the learning rate, and their ``jax.vmap``) work on both paths: the fast step
    carries a ``custom_jvp`` whose tangent is the plain autodiff of the same products. Other networks and
    losses (a plain function) always take the generic path.

    Raises `dlnjax.OptionError` for ``steps < 1``, ``every < 1`` or not dividing ``steps``, an unknown
    metric name and a non-positive threshold; `dlnjax.UnsupportedError` for ``"test_error"`` without
    ``loss.truth`` (or for a nonlinear network); `dlnjax.InputTypeError` for a ``net0``, ``mask`` or
    optimizer of the wrong type and `dlnjax.ShapeError` for a ``mask`` not shaped like ``net0`` (all
    ``ValueError``).
    """
    metrics, metric_fns = _check_args(
        loss, net0, optimizer, steps, every, metrics, metric_fns, divergence_threshold, mask
    )
    regularized = kappa is not None and not (isinstance(kappa, (int, float)) and kappa == 0)
    kappa = jnp.asarray(kappa if regularized else 0.0, jnp.real(jnp.zeros((), net0.dtype)).dtype)
    limit = jnp.asarray(
        jnp.inf if divergence_threshold is None else divergence_threshold, kappa.dtype
    )
    if mask is not None:
        mask = jax.tree_util.tree_map(lambda m: jnp.asarray(m, net0.dtype), mask)
    if not isinstance(fast, bool):
        raise OptionError(f"train: fast must be True or False; got {fast!r}.")
    return _train(
        loss,
        net0,
        optimizer,
        kappa,
        limit,
        steps,
        every,
        metrics,
        metric_fns,
        regularized,
        mask,
        fast,
    )


@eqx.filter_jit
def _train(
    loss,
    net0,
    optimizer,
    kappa,
    threshold,
    steps,
    every,
    metrics,
    metric_fns,
    regularized,
    user_mask,
    fast,
) -> TrainResult:
    mask = net0.mask()
    if user_mask is not None:  # entries frozen by the caller (e.g. the frozen layers of dlnjax.pad)
        mask = jax.tree_util.tree_map(jnp.multiply, mask, user_mask)
    # the built-in metrics see the whole network; grad_norm counts the trainable entries
    run = Run(
        loss, kappa=kappa if regularized else None, grad_mask=None if user_mask is None else mask
    )

    value_and_grad = _value_and_grad(loss, net0, run.kappa, fast)

    def rejected(value, limit):
        # A non-finite weight makes the objective non-finite (inf * 0 = nan), so the value suffices; a
        # non-finite gradient at a finite value gives a non-finite next iterate, rejected one step later.
        return ~(jnp.isfinite(value) & (value <= limit))

    value0, g0 = value_and_grad(net0)
    limit = jnp.where(value0 > 0, threshold * value0, jnp.inf)
    bad0 = rejected(value0, limit)
    opt0 = optimizer.init(net0)

    def step(carry, _):
        net, g, opt_state, t, diverged, diverged_at = carry
        updates, new_opt = optimizer.update(g, opt_state, net)
        updates = jax.tree_util.tree_map(lambda u, m: u * m, updates, mask)
        new_net = optax.apply_updates(net, updates)
        new_value, new_g = value_and_grad(new_net)
        bad = rejected(new_value, limit)
        newly = bad & ~diverged
        diverged = diverged | bad
        diverged_at = jnp.where(newly, t + 1, diverged_at)
        net, g, opt_state = _tree_select(diverged, (net, g, opt_state), (new_net, new_g, new_opt))
        return (net, g, opt_state, t + 1, diverged, diverged_at), None

    def record(net, g, t, diverged, diverged_at):
        out = {name: QUANTITIES[name].fn(run, net, g) for name in metrics}
        for name, fn in metric_fns.items():
            out[name] = fn(net)
        gone = diverged & (t >= diverged_at)
        nan = lambda x: (
            jnp.where(gone, jnp.nan, x) if jnp.issubdtype(jnp.result_type(x), jnp.inexact) else x
        )
        return jax.tree_util.tree_map(nan, out)

    zero = jnp.zeros((), jnp.int32)
    carry = (net0, g0, opt0, zero, bad0, jnp.where(bad0, zero, -1))
    first = record(net0, g0, zero, bad0, carry[-1])

    def chunk(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=every)
        net, g, _, t, diverged, diverged_at = carry
        return carry, record(net, g, t, diverged, diverged_at)

    carry, rest = jax.lax.scan(chunk, carry, None, length=steps // every)
    history = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    net, _, _, _, diverged, diverged_at = carry
    return TrainResult(
        net=net,
        history=history,
        steps=jnp.arange(0, steps + 1, every, dtype=jnp.int32),
        diverged=diverged,
        diverged_at=diverged_at,
    )
