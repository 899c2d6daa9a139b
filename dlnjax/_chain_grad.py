"""The value and gradient of ``W -> E(X(W))`` for a small linear network, fast under ``jax.vmap`` (`dlnjax.train`).

The gradient is ``grad_{W_k} E = P_k^T grad E(X) Q_k^T`` (docs/theory.md §1; (1.2) of Lindsey & Menon, seed
001), from the partial products of the chain ``X = W_N ... W_1`` evaluated in the cheaper association: from the
output side, ``((W_N W_{N-1}) ...) W_1``, when ``d_N <= d_0`` (a row-vector chain for seed 004's scalar output,
``d_0 / d_N`` times fewer multiply-adds than from the input side), else from the input side.
Below `UNROLL_DEPTH` layers the chain is unrolled (no loop), above it a ``lax.scan``.

**Batch axis last.** Under ``jax.vmap`` (a batch of runs, `dlnjax.train`'s sweeps) the chain runs with the batch
axis *last*: every array ``(..., B)``, every product ``sum(a[:, :, None] * b[None], axis=1)``, a multiply-and-sum
vectorized over the runs. With the batch axis first (what ``jax.vmap`` gives by itself) each tiny product is a
reduction over a middle axis of length 5 with the runs outermost, which XLA:CPU ran 4-5x slower at 256 and 1600
runs (benchmarks/README.md, ``train_throughput.py``). The rule is a `jax.custom_batching.custom_vmap`; without
vmap the same products run one network at a time. The backward pass is written out (the saved partial products
give ``P_k^T G Q_k^T``), not traced by autodiff: autodiff of the unrolled products accumulated the layer gradients
as dozens of padded slices in one fusion (18-27 s compiles, 5x slower steps). The loss is evaluated batch-first
(``jax.vmap`` of its ``value_and_grad`` on the end-to-end matrices).

Every product is an exact multiply-and-sum in working precision (no ``dot_general``, so no precision to state
on accelerators; see `dlnjax._numerics.dot`). Results equal ``jax.value_and_grad`` of ``loss(end_to_end(W))`` to
rounding.

**Derivatives** (through `dlnjax.train`: with respect to the data, the initialization, the learning rate). JAX
0.10 has no reverse mode for a ``custom_vmap`` ("Linearization failed to produce known values for all output
primals"), so the batch-last function is wrapped in a ``jax.custom_jvp``: its primal output is the function
itself (batch-last under vmap), its tangent ``jax.jvp`` of the same products run one network at a time (under
vmap, batch-first as ``jax.vmap`` makes them), linear in the tangents and so transposable: ``jax.grad``,
``jax.jacfwd``, ``jax.jacrev``, their ``jax.vmap`` and higher derivatives all work. The ``custom_vmap`` rule
returns unbatched outputs when called with no batched input: JAX's forward mode of a ``custom_vmap`` (reached
inside the second derivative of a ``lax.scan``, whose linearization inlines the ``custom_jvp``) calls the rule
with the inputs batched in both primal and tangent only and vmaps over the rest itself, so a batch axis added
there came out twice (shape errors such as ``sub got incompatible shapes (1, 2, 3, 1), (1, 1, 2, 3)``, or
unequal ``while_loop`` carry types in ``jax.jacfwd`` through `dlnjax.train`). `dlnjax.sharpness` keeps ``jax.grad`` of `dlnjax.network_loss` for its Hessian-vector
products.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._network import DLN
from .losses import AbstractLoss, Regression

__all__ = [
    "SMALL_WIDTH",
    "UNROLL_DEPTH",
    "chain_applies",
    "chain_value_and_grad",
    "fast_value_and_grad",
]

SMALL_WIDTH = 8  # widest stored width of the fast path (its products are multiply-and-sums)
UNROLL_DEPTH = (
    16  # deepest network whose chain is unrolled (deeper: a lax.scan over the inner layers)
)


def chain_applies(net: DLN) -> bool:
    """Whether `chain_value_and_grad` serves ``net``: linear, real, every stored width at most `SMALL_WIDTH`."""
    return (
        net.activation.is_linear
        and jnp.issubdtype(net.dtype, jnp.floating)
        and max(net.widths[0], net.widths[-1], net.inner_width) <= SMALL_WIDTH
    )


def _mul(a: Array, b: Array) -> Array:
    """``a @ b`` on the two leading axes, batch axes trailing (``(r, k, *B) x (k, c, *B) -> (r, c, *B)``): an exact
    multiply-and-sum in working precision."""
    return jnp.sum(a[:, :, None] * b[None], axis=1)


def _tr(a: Array) -> Array:
    return jnp.swapaxes(a, 0, 1)


def _scan(f, carry, xs, reverse: bool = False):
    """``lax.scan(f, carry, xs, reverse=reverse)``, unrolled in Python up to `UNROLL_DEPTH` steps."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if n > UNROLL_DEPTH:
        return jax.lax.scan(f, carry, xs, reverse=reverse)
    ys = [None] * n
    for k in reversed(range(n)) if reverse else range(n):
        carry, ys[k] = f(carry, jax.tree_util.tree_map(lambda a: a[k], xs))
    if n == 0:
        return carry, None
    return carry, jax.tree_util.tree_map(lambda *y: jnp.stack(y), *ys)


def _chain_vjp(arrays: tuple[Array, ...], from_output: bool):
    """``X = W_N ... W_1`` and the map ``G -> grad_W <G, X(W)>`` (``P_k^T G Q_k^T`` per layer), batch axes trailing.

    ``from_output``: the chain runs ``((W_N W_{N-1}) ...) W_1`` (cheaper when ``d_N <= d_0``), else
    ``W_N (... (W_2 W_1))``; the saved partial products ``P_k`` (or ``Q_k``) give the layer gradients.
    """
    if len(arrays) == 1:
        return arrays[0], lambda G: (G,)
    first, inner, last = arrays
    if inner.shape[0] == 0:
        empty = lambda G: jnp.zeros(inner.shape[:3] + G.shape[2:], G.dtype)
        return _mul(last, first), lambda G: (_mul(_tr(last), G), empty(G), _mul(G, _tr(first)))
    if from_output:
        # p = W_N ... W_{k+1} before the product with W_k, saved per inner layer
        p, P = _scan(lambda p, w: (_mul(p, w), p), last, inner, reverse=True)

        def back(G):
            r, grads = _scan(
                lambda r, wp: (_mul(r, _tr(wp[0])), _mul(_tr(wp[1]), r)),
                _mul(G, _tr(first)),
                (inner, P),
            )
            return _mul(_tr(p), G), grads, r

        return _mul(p, first), back
    # q = W_{k-1} ... W_1 before the product with W_k, saved per inner layer
    q, Q = _scan(lambda q, w: (_mul(w, q), q), first, inner)

    def back(G):
        s, grads = _scan(
            lambda s, wq: (_mul(_tr(wq[0]), s), _mul(s, _tr(wq[1]))),
            _mul(_tr(last), G),
            (inner, Q),
            reverse=True,
        )
        return s, grads, _mul(G, _tr(q))

    return _mul(last, q), back


def _value_and_grad(loss: Callable, net: DLN, arrays: tuple[Array, ...], batched: bool):
    """``(values, gradient arrays)``; ``batched``: the arrays carry a trailing batch axis and ``loss`` maps the
    batch of end-to-end matrices ``(B, d_N, d_0)`` to the values ``(B,)``."""
    X, back = _chain_vjp(arrays, net.widths[-1] <= net.widths[0])
    if not batched:
        value, gX = jax.value_and_grad(loss)(X)
        return value, back(gX)
    # the gradient of the sum over runs holds the per-run gradients (the runs are independent)
    total = lambda Xb: (lambda v: (jnp.sum(v), v))(loss(Xb))
    (_, value), gX = jax.value_and_grad(total, has_aux=True)(jnp.moveaxis(X, -1, 0))
    return value, back(jnp.moveaxis(gX, 0, -1))


def _core(loss_tree, net: DLN):
    """The value-and-gradient function of flat lists ``(loss leaves, stored arrays)``: batch-last under vmap,
    differentiable in both modes (module docstring, *Derivatives*).

    Flat lists of arrays (no ``None`` leaves) keep the rules simple; ``loss_tree`` (``(treedef, static part)``)
    rebuilds the loss.
    """
    treedef, static = loss_tree
    rebuild = lambda leaves: eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)

    def plain(leaves, arrays):
        return _value_and_grad(rebuild(leaves), net, tuple(arrays), False)

    @jax.custom_batching.custom_vmap
    def batched(leaves, arrays):
        return plain(leaves, arrays)

    @batched.def_vmap
    def rule(axis_size, in_batched, leaves, arrays):
        leaves_batched, arrays_batched = in_batched
        if not (any(leaves_batched) or any(arrays_batched)):
            # jax's forward mode of a custom_vmap calls the rule with the inputs batched in both primal and
            # tangent only, and vmaps over the others itself: with none, adding a batch axis would double it
            out = plain(leaves, arrays)
            return out, jax.tree_util.tree_map(lambda _: False, out)
        arrays = tuple(
            jnp.moveaxis(a, 0, -1) if b else jnp.broadcast_to(a[..., None], a.shape + (axis_size,))
            for a, b in zip(arrays, arrays_batched)
        )
        axes = [0 if b else None for b in leaves_batched]
        values = jax.vmap(lambda ls, x: rebuild(ls)(x), in_axes=(axes, 0))
        value, grads = _value_and_grad(lambda X: values(leaves, X), net, arrays, True)
        return (value, tuple(jnp.moveaxis(g, -1, 0) for g in grads)), (True, (True,) * len(grads))

    @jax.custom_jvp
    def core(leaves, arrays):
        return batched(leaves, arrays)

    @core.defjvp
    def core_jvp(primals, tangents):
        # the primal by the rule itself (so higher derivatives come back here), the tangent by plain autodiff
        return core(*primals), jax.jvp(plain, primals, tangents)[1]

    return core


def chain_value_and_grad(loss: Callable, net: DLN) -> tuple[Array, DLN]:
    """``(E(X(W)), grad_W E)`` for a linear network with real weights (`chain_applies`), ``E = loss``.

    Equals ``jax.value_and_grad(lambda n: loss(dlnjax.end_to_end(n)))(net)`` to rounding; under ``jax.vmap``
    it runs batch-last (module docstring).
    """
    dynamic, static = eqx.partition(loss, eqx.is_array)
    leaves, treedef = jax.tree_util.tree_flatten(dynamic)
    value, grads = _core((treedef, static), net)(leaves, list(net.arrays()))
    return value, net.replace_arrays(*grads)


def fast_value_and_grad(loss: Callable, net: DLN) -> Callable[[DLN], tuple[Array, DLN]] | None:
    """``W -> (E(W), grad_W E)`` by `chain_value_and_grad` for networks shaped like ``net``, or ``None`` where the
    fast path does not apply (a loss that is not a `dlnjax.losses.AbstractLoss`, or ``net`` fails
    `chain_applies`). A `dlnjax.losses.Regression` with ``d_0 <= n`` is evaluated in its covariance form
    (`Regression.covariance_form`, ``O(d_N d_0^2)`` per evaluation instead of ``O(n d_N d_0)``)."""
    if not (isinstance(loss, AbstractLoss) and chain_applies(net)):
        return None
    if isinstance(loss, Regression) and net.widths[0] <= loss.inputs.shape[0]:
        loss = loss.covariance_form()
    return lambda n: chain_value_and_grad(loss, n)
