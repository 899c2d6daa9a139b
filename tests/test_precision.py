"""Every matrix product of the library states its precision: ``HIGHEST``.

On accelerators XLA may run a float32 product of ``DEFAULT`` precision in TF32 or bfloat16 passes
(``jax.lax.Precision``, https://docs.jax.dev/en/latest/_autosummary/jax.lax.Precision.html, and
``jax.default_matmul_precision``), about ``1e-3`` relative error, which would silently break exact laws
such as the conservation of ``G``. These tests lower the jitted programs of the flows, `dlnjax.train`,
the fiber gradient, `dlnjax.sharpness` and `dlnjax.simulate` on float32 input to StableHLO and check that
every ``dot_general`` / ``convolution`` in them carries ``precision = [HIGHEST, HIGHEST]``. Lowering runs
on any backend and compiles nothing, so the check holds on a CPU-only machine.

Three sizes: width 48 (every product a ``dot_general``), the non-uniform widths ``(12, 5, 3, 10)`` (zero
padding; products with a contraction of at most 8 a multiply-and-sum, the others a ``dot_general``) and
the tiny widths ``(3, 4, 5, 2)``, where `dlnjax._numerics.dot` writes every product as a multiply-and-sum
(exact in working precision, no ``dot_general``). The number of products is asserted positive at width
48 everywhere, and at every size for the fiber solves, `dlnjax.sharpness` and `dlnjax.simulate` (whose
Gram matrices, inner products and error norms are ``dot_general`` at any size); the vector field of a
flow or `dlnjax.train` at the smaller sizes may have none.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import optax
import pytest

import dlnjax
from dlnjax import flows, losses

F32 = jnp.float32
_PRODUCT = re.compile(r"\bstablehlo\.(dot_general|dot|convolution)\b")
# The pretty form of a dot_general, and the attribute form (e.g. of a convolution).
_HIGHEST = re.compile(
    r"precision = \[HIGHEST, HIGHEST\]"
    r"|precision_config = \[#stablehlo<precision HIGHEST>, #stablehlo<precision HIGHEST>\]"
)


def products(fn, *args) -> tuple[int, list[str]]:
    """``(number of products, the products without HIGHEST precision)`` in the StableHLO of ``jit(fn)(*args)``."""
    text = jax.jit(fn).lower(*args).as_text()
    ops = [line.strip() for line in text.splitlines() if _PRODUCT.search(line)]
    return len(ops), [op for op in ops if not _HIGHEST.search(op)]


def assert_highest(fn, *args, positive: bool = True):
    n, unstated = products(fn, *args)
    if positive:
        assert n > 0, "no dot_general in the program: the check would be vacuous"
    assert not unstated, (
        f"{len(unstated)} of {n} products do not state HIGHEST precision:\n"
        + "\n".join(op[:240] for op in unstated)
    )


# --------------------------------------------------------------------------------------------------
# The checker itself
# --------------------------------------------------------------------------------------------------


def test_checker_flags_unstated_products():
    a = jnp.ones((48, 48), F32)
    hi = jax.lax.Precision.HIGHEST
    assert len(products(lambda a: a @ a, a)[1]) == 1
    assert len(products(lambda a: jnp.matmul(a, a, precision=jax.lax.Precision.HIGH), a)[1]) == 1
    assert len(products(lambda a: jnp.einsum("ij,jk->ik", a, a), a)[1]) == 1
    assert products(lambda a: jnp.matmul(a, a, precision=hi), a) == (1, [])
    assert products(lambda a: jnp.einsum("ij,jk->ik", a, a, precision=hi), a) == (1, [])
    assert products(lambda a: jnp.vdot(a, a, precision=hi), a) == (1, [])
    img, ker = jnp.ones((1, 1, 16, 16), F32), jnp.ones((1, 1, 3, 3), F32)
    conv = lambda p: lambda x, k: jax.lax.conv(x, k, (1, 1), "SAME", precision=p)
    assert products(conv(hi), img, ker) == (1, [])
    assert len(products(conv(None), img, ker)[1]) == 1
    # a mix: both counted, only the unstated one reported
    n, unstated = products(lambda a: (a @ a, jnp.matmul(a, a, precision=hi)), a)
    assert (n, len(unstated)) == (2, 1)
    # products in a jax.grad and inside a while loop are seen too
    n, unstated = products(jax.grad(lambda a: jnp.sum(jnp.matmul(a, a, precision=hi) @ a)), a)
    assert n >= 3 and 1 <= len(unstated) < n
    loop = lambda a: jax.lax.fori_loop(0, 3, lambda i, x: x @ a, a)
    assert products(loop, a)[1]


# --------------------------------------------------------------------------------------------------
# Instances (float32)
# --------------------------------------------------------------------------------------------------

SIZES = {"w48": (48, 48, 48, 48), "mixed": (12, 5, 3, 10), "tiny": (3, 4, 5, 2)}


def _widths(size):
    return SIZES[size]


def _net(size, dtype=F32, activation=None):
    net = dlnjax.gaussian(jr.key(0), SIZES[size], 1.0, dtype=dtype)
    return net if activation is None else net.with_activation(activation)


def _target(widths, dtype=F32):
    return jr.normal(jr.key(1), (widths[-1], widths[0]), F32).astype(dtype)


def _regression(widths, d_out=None):
    n = 7
    x = jr.normal(jr.key(2), (n, widths[0]), F32)
    y = jr.normal(jr.key(3), (n, widths[-1] if d_out is None else d_out), F32)
    return losses.Regression(x, y)


T0 = jnp.float32(0.0)
TS = jnp.linspace(0.0, 1.0, 3, dtype=F32)

# A product Lineax states without precision: xfail(strict), so the case turns into a failure (and the mark must
# go) once Lineax states it.
_XFAIL_GMRES = pytest.mark.xfail(
    strict=True,
    reason="lineax GMRES (lineax/_solver/gmres.py, `x[...] @ proj` of the Arnoldi step) states no precision",
)


def _flow_cases():
    """``(id, build)``, ``build(size) -> (flow, state)``: the vector fields of `dlnjax.flows` at ``t = 0``."""

    def net_state(size, dtype=F32):
        return _net(size, dtype)

    def e2e_state(size, dtype=F32):
        return dlnjax.end_to_end(_net(size, dtype))

    fact = lambda size, dtype=F32: losses.Factorization(_target(_widths(size), dtype))
    regr = lambda size: _regression(_widths(size))
    return [
        ("Gradient", lambda s: (flows.Gradient(fact(s)), net_state(s))),
        ("Gradient-regression", lambda s: (flows.Gradient(regr(s)), net_state(s))),
        (
            "Gradient-gelu",
            lambda s: (flows.Gradient(regr(s)), _net(s, activation="gelu")),
        ),
        (
            "Gradient-complex64",
            lambda s: (flows.Gradient(fact(s, jnp.complex64)), net_state(s, jnp.complex64)),
        ),
        ("Regularized", lambda s: (flows.Regularized(fact(s), 0.1), net_state(s))),
        ("FiberL2", lambda s: (flows.FiberL2(), net_state(s))),
        ("FiberL2-complex64", lambda s: (flows.FiberL2(), net_state(s, jnp.complex64))),
        (
            "FiberL2-lineax-CG",
            lambda s: (flows.FiberL2(solver=lx.CG(rtol=1e-5, atol=1e-6)), net_state(s)),
        ),
        (
            "FiberL2-dense",
            lambda s: (flows.FiberL2(solver=dlnjax.FiberDense(lx.Cholesky())), net_state(s)),
        ),
        ("FiberSchatten", lambda s: (flows.FiberSchatten(p=3.0), net_state(s))),
        ("KirwanNess", lambda s: (flows.KirwanNess(), net_state(s))),
        ("Langevin", lambda s: (flows.Langevin(fact(s), 0.1, 1.0), net_state(s))),
        (
            "Masked-Gradient",
            lambda s: (flows.Masked(flows.Gradient(fact(s)), net_state(s).mask()), net_state(s)),
        ),
        ("EndToEnd-N3", lambda s: (flows.EndToEnd(fact(s), 3, 0.1), e2e_state(s))),
        ("EndToEnd-Ninf", lambda s: (flows.EndToEnd(fact(s), float("inf"), 0.1), e2e_state(s))),
        ("EndToEnd-N3-regression", lambda s: (flows.EndToEnd(regr(s), 3), e2e_state(s))),
        (
            "EndToEnd-Ninf-complex64",
            lambda s: (
                flows.EndToEnd(fact(s, jnp.complex64), float("inf")),
                e2e_state(s, jnp.complex64),
            ),
        ),
    ]


def _param_cases(cases):
    """``(id, build)`` or ``(id, build, mark)`` tuples as pytest params."""
    return [pytest.param(name, build, id=name, marks=marks) for name, build, *marks in cases]


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize(("name", "build"), _param_cases(_flow_cases()))
def test_flow_vector_fields(name, build, size):
    flow, state = build(size)
    assert_highest(lambda y: flow(T0, y), state, positive=size == "w48")


@pytest.mark.parametrize("size", list(SIZES))
def test_train(size):
    loss = losses.Factorization(_target(_widths(size)))
    fn = lambda n: dlnjax.train(loss, n, optax.sgd(1e-2), 3, metrics=("loss",)).net
    assert_highest(fn, _net(size), positive=size == "w48")


@pytest.mark.parametrize("size", list(SIZES))
def test_train_adam_weight_decay_nonlinear(size):
    loss = _regression(_widths(size))
    fn = lambda n: dlnjax.train(loss, n, optax.adam(1e-2), 3, kappa=0.1).net
    assert_highest(fn, _net(size, activation="gelu"), positive=size == "w48")


def test_train_fast_path_vmapped_with_sharpness():
    """The fast training step (`dlnjax._chain_grad`: seed 004's widths, a `Regression` in covariance form with
    n = 50, so its moments are ``dot_general``s) under ``jax.vmap``, then `dlnjax.sharpness` on the same path."""
    loss = losses.Regression.random(jr.key(4), 50, 5, dtype=F32)
    nets = jax.vmap(lambda k: dlnjax.gaussian(k, (5,) * 10 + (1,), 0.4, dtype=F32))(
        jr.split(jr.key(5), 3)
    )

    def fn(batch):
        res = jax.vmap(lambda n: dlnjax.train(loss, n, optax.sgd(0.1), 3, fast=True).net)(batch)
        return jax.vmap(lambda n: dlnjax.sharpness(loss, n, iterations=5))(res)

    assert_highest(fn, nets)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize(
    "solver",
    [
        pytest.param(None, id="default"),
        pytest.param(lx.CG(rtol=1e-5, atol=1e-6), id="lineax-CG"),
        pytest.param(dlnjax.FiberDense(lx.Cholesky()), id="dense"),
    ],
)
def test_fiber_gradient(solver, size):
    # The fiber solve has products at every size (its Gram matrices are never a tiny multiply-and-sum).
    assert_highest(lambda n: dlnjax.fiber_l2_gradient(n, solver=solver), _net(size))


@pytest.mark.parametrize("size", list(SIZES))
def test_sharpness(size):
    # The Lanczos inner products are vector dots at every size.
    loss = losses.Factorization(_target(_widths(size)))
    assert_highest(lambda n: dlnjax.sharpness(loss, n, iterations=10), _net(size))


def test_regression_constants():
    loss = _regression(SIZES["w48"], d_out=1)
    assert_highest(lambda: dlnjax.regression_constants(loss))


def _simulate_cases():
    fact = lambda s: losses.Factorization(_target(_widths(s)))
    return [
        (
            "Gradient",
            lambda s: (lambda n: dlnjax.simulate(flows.Gradient(fact(s)), n, TS).ys, _net(s)),
        ),
        ("FiberL2", lambda s: (lambda n: dlnjax.simulate(flows.FiberL2(), n, TS).ys, _net(s))),
        (
            "EndToEnd",
            lambda s: (
                lambda X: dlnjax.simulate(flows.EndToEnd(fact(s), 3, 0.1), X, TS).ys,
                dlnjax.end_to_end(_net(s)),
            ),
        ),
        (
            "Langevin",
            lambda s: (
                lambda n: (
                    dlnjax.simulate(
                        flows.Langevin(fact(s), 0.1, 1.0), n, TS, key=jr.key(4), dt0=0.1
                    ).ys
                ),
                _net(s),
            ),
        ),
        (
            "Stiff-EndToEnd",  # preconditioned: BiCGStab
            lambda s: (
                lambda X: (
                    dlnjax.simulate(
                        flows.EndToEnd(fact(s), 3, 0.1), X, TS, solver=dlnjax.Stiff()
                    ).ys
                ),
                dlnjax.end_to_end(_net(s)),
            ),
        ),
        (
            "Stiff-Gradient-bicgstab",
            lambda s: (
                lambda n: (
                    dlnjax.simulate(
                        flows.Gradient(fact(s)), n, TS, solver=dlnjax.Stiff(krylov="bicgstab")
                    ).ys
                ),
                _net(s),
            ),
        ),
        (
            "Stiff-Gradient-gmres",  # no preconditioner: GMRES
            lambda s: (
                lambda n: dlnjax.simulate(flows.Gradient(fact(s)), n, TS, solver=dlnjax.Stiff()).ys,
                _net(s),
            ),
            _XFAIL_GMRES,
        ),
    ]


def _simulate_params():
    """Every case at every size; the Stiff cases (~8 s of tracing each) at the "mixed" size by default, the
    other sizes slow (make test-slow)."""
    out = []
    for p in _param_cases(_simulate_cases()):
        name = p.values[0]
        for size in SIZES:
            marks = list(p.marks)
            if name.startswith("Stiff") and size != "mixed":
                marks.append(pytest.mark.slow)
            out.append(pytest.param(*p.values, size, id=f"{name}-{size}", marks=marks))
    return out


@pytest.mark.parametrize(("name", "build", "size"), _simulate_params())
def test_simulate(name, build, size):
    # The error norms of the step-size controller are products at every size.
    fn, state = build(size)
    assert_highest(fn, state)
