"""The fast training step (dlnjax/_chain_grad.py, `Regression.covariance_form`) against straightforward references.

Float64 throughout (conftest switches x64 on). References: numpy for the regression loss and its gradient, and
``jax.value_and_grad`` of ``loss(explicit_product(layers))`` on an explicit list of layers (`conftest`), never the
code under test. The fast path must equal them to rounding, one run at a time and under ``jax.vmap`` (where it runs
batch-last through a ``custom_vmap`` rule), and `dlnjax.train` must follow the trajectory of its generic path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close, explicit_product, rand_layers

import dlnjax
from dlnjax._chain_grad import (
    UNROLL_DEPTH,
    chain_applies,
    chain_value_and_grad,
    fast_value_and_grad,
)
from dlnjax.losses import Factorization, MatrixCompletion, Regression


def _regression(seed, n, d_in, d_out, is_complex=False):
    rng = np.random.default_rng(seed)
    draw = lambda *s: rng.standard_normal(s) + (1j * rng.standard_normal(s) if is_complex else 0)
    return draw(n, d_in), draw(n, d_out)


@pytest.mark.parametrize("is_complex", [False, True])
@pytest.mark.parametrize(("n", "d_in", "d_out"), [(50, 5, 1), (7, 3, 4), (4, 6, 2)])
def test_covariance_form_equals_direct_loss_and_gradient(n, d_in, d_out, is_complex):
    x, y = _regression(1, n, d_in, d_out, is_complex)
    loss = Regression(x, y)
    cov = loss.covariance_form()
    rng = np.random.default_rng(2)
    for _ in range(3):
        X = rng.standard_normal((d_out, d_in)) + (
            1j * rng.standard_normal((d_out, d_in)) if is_complex else 0
        )
        direct = np.mean(np.sum(np.abs(x @ X.T - y) ** 2, axis=1))  # numpy reference
        assert_close(float(cov(jnp.asarray(X))), direct, 1e-12, "value")
        assert_close(float(loss(jnp.asarray(X))), direct, 1e-12, "direct value")
        # gradient for Re Tr(A^* B): conj of jax.grad; closed form (2/n) sum_i (X x_i - y_i) x_i^*
        grad = np.conj(np.asarray(jax.grad(cov)(jnp.asarray(X))))
        expect = 2 * (x @ X.T - y).T @ np.conj(x) / n
        assert_close(grad, expect, 1e-12, "gradient")
    assert cov.shape == loss.shape


def _reference(loss, layers):
    """``(E, grad)`` of ``loss(explicit_product(layers))`` by ``jax.value_and_grad`` on the explicit layers."""
    return jax.value_and_grad(lambda ls: loss(explicit_product(ls)))(
        [jnp.asarray(w) for w in layers]
    )


CHAINS = [
    (5, 5, 5, 1),  # d_N < d_0: the chain from the output side
    (2, 4, 4, 3),  # d_N > d_0: from the input side
    (3, 4),  # depth one
    (3, 4, 2),  # depth two (no inner layers)
    (3, 4, 6, 5, 2),  # non-uniform: zero padding
    (4,) * (UNROLL_DEPTH + 4) + (1,),  # deeper than the unrolled chain: lax.scan
    (1,) + (3,) * (UNROLL_DEPTH + 3) + (2,),  # the same, from the input side
]


@pytest.mark.parametrize("widths", CHAINS)
def test_chain_value_and_grad_equals_reference(widths):
    x, y = _regression(3, 9, widths[0], widths[-1])
    loss = Regression(x, y)
    nets = [rand_layers(seed, widths, scale=1.2) for seed in range(3)]
    batch = dlnjax.DLN.from_layers  # one network
    assert chain_applies(batch(nets[0]))
    refs = [_reference(loss, ls) for ls in nets]
    for ls, (value, grad) in zip(nets, refs):
        v, g = jax.jit(lambda n: chain_value_and_grad(loss, n))(batch(ls))
        assert_close(float(v), float(value), 1e-12, "value")
        assert_close(g.layers, grad, 1e-12, "gradient")
    # under vmap: the batch-last rule
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[batch(ls) for ls in nets])
    v, g = jax.jit(jax.vmap(lambda n: chain_value_and_grad(loss, n)))(stacked)
    for i, (value, grad) in enumerate(refs):
        assert_close(float(v[i]), float(value), 1e-12, f"batched value {i}")
        assert_close([a[i] for a in g.layers], grad, 1e-12, f"batched gradient {i}")
        # the zero padding of non-uniform widths gets the gradient of the padded product, as jax.grad gives it
    direct = jax.vmap(jax.grad(lambda n: loss(dlnjax.end_to_end(n))))(stacked)
    assert_close(g.arrays(), direct.arrays(), 1e-12, "stored arrays (padding included)")


def test_batched_losses_nested_vmap_and_broadcast_networks():
    """Loss data batched beside the networks, one network for a batch of losses, and a vmap inside a vmap."""
    widths = (4, 3, 3, 2)
    data = [_regression(s, 8, 4, 2) for s in range(3)]
    losses = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[Regression(x, y) for x, y in data])
    nets = [rand_layers(10 + s, widths) for s in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[dlnjax.DLN(ls) for ls in nets])
    one = lambda l, n: chain_value_and_grad(l, n)
    v, g = jax.jit(jax.vmap(one))(losses, stacked)
    v1, g1 = jax.jit(jax.vmap(one, in_axes=(0, None)))(losses, dlnjax.DLN(nets[0]))
    for i, (x, y) in enumerate(data):
        value, grad = _reference(Regression(x, y), nets[i])
        assert_close(float(v[i]), float(value), 1e-12, "value")
        assert_close([a[i] for a in g.layers], grad, 1e-12, "gradient")
        value, grad = _reference(Regression(x, y), nets[0])
        assert_close(float(v1[i]), float(value), 1e-12, "broadcast network: value")
        assert_close([a[i] for a in g1.layers], grad, 1e-12, "broadcast network: gradient")
    # vmap over (loss, net) pairs inside a vmap over a second copy
    twice = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), stacked)
    v2, g2 = jax.jit(jax.vmap(jax.vmap(one), in_axes=(None, 0)))(losses, twice)
    for j, scale in enumerate((1.0, 2.0)):
        for i, (x, y) in enumerate(data):
            value, grad = _reference(Regression(x, y), [scale * w for w in nets[i]])
            assert_close(float(v2[j, i]), float(value), 1e-12, "nested value")
            assert_close([a[j, i] for a in g2.layers], grad, 1e-12, "nested gradient")


def test_fast_path_applies_only_where_it_should():
    small = dlnjax.DLN(rand_layers(0, (3, 4, 2)))
    loss = Factorization(jnp.ones((2, 3)))
    assert fast_value_and_grad(loss, small) is not None
    assert fast_value_and_grad(lambda X: loss(X), small) is None  # a plain function: generic path
    assert fast_value_and_grad(loss, small.with_activation("relu")) is None
    assert fast_value_and_grad(loss, dlnjax.DLN(rand_layers(0, (3, 9, 2)))) is None  # width 9
    complex_net = dlnjax.DLN(rand_layers(0, (3, 4, 2), is_complex=True))
    assert fast_value_and_grad(Factorization(jnp.ones((2, 3), complex)), complex_net) is None


def _sweep(loss, nets, lrs, steps, kappa=None, every=5, fast=False):
    def one(net, lr):
        res = dlnjax.train(
            loss,
            net,
            optax.sgd(lr),
            steps,
            every=every,
            metrics=("loss", "grad_norm"),
            kappa=kappa,
            fast=fast,
        )
        return res.net, res.history, res.diverged, res.diverged_at

    return jax.jit(jax.vmap(one))(nets, lrs)


@pytest.mark.parametrize("kappa", [None, 0.05])
def test_train_fast_path_follows_the_generic_path(kappa):
    """Seed 004's shape (widths (5, ..., 5, 1), Regression with n = 50): the fast path (covariance form,
    batch-last chain) against the generic path (the loss wrapped in a plain function), vmapped, float64."""
    widths = (5,) * 6 + (1,)
    loss = Regression.random(jax.random.PRNGKey(0), 50, 5)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    nets = jax.vmap(lambda k, s: dlnjax.gaussian(k, widths, s))(
        keys, jnp.array([0.3, 0.5, 0.7, 1.5])
    )
    lrs = jnp.array([0.05, 0.1, 0.1, 0.1])
    fast = _sweep(loss, nets, lrs, 40, kappa, fast=True)
    generic = _sweep(lambda X: loss(X), nets, lrs, 40, kappa)
    np.testing.assert_array_equal(fast[2], generic[2])
    np.testing.assert_array_equal(fast[3], generic[3])
    assert bool(fast[2][-1]) and not bool(
        fast[2][0]
    )  # scale 1.5 diverges: both paths flag it at the same step
    assert_close(fast[0].arrays(), generic[0].arrays(), 1e-11, "final networks")
    ok = ~np.asarray(fast[2])
    for name in ("loss", "grad_norm"):
        assert_close(fast[1][name][ok], generic[1][name][ok], 1e-11, name)


def test_train_fast_path_single_run_completion_and_gradient_through_train():
    """One run (no vmap: the plain function of the custom_vmap), a completion loss, and a derivative of the final
    loss with respect to the learning rate through a vmapped `train` (the custom_vmap rule differentiated)."""
    loss = MatrixCompletion.random(jax.random.PRNGKey(2), (4, 5), 2, 12)
    net0 = dlnjax.DLN(rand_layers(4, (5, 3, 3, 4), scale=1.0))
    run = lambda l, lr: dlnjax.train(l, net0, optax.sgd(lr), 20, metrics=("loss",), fast=True)
    fast, generic = run(loss, 0.3), run(lambda X: loss(X), 0.3)
    assert_close(fast.net.arrays(), generic.net.arrays(), 1e-12, "single run")
    assert_close(fast.history["loss"], generic.history["loss"], 1e-12, "single run loss")
    final = lambda l: jax.vmap(lambda lr: run(l, lr).history["loss"][-1])
    lrs = jnp.array([0.1, 0.3])
    d_fast = jax.jit(jax.grad(lambda lr: jnp.sum(final(loss)(lr))))(lrs)
    d_generic = jax.jit(jax.grad(lambda lr: jnp.sum(final(lambda X: loss(X))(lr))))(lrs)
    assert np.all(np.isfinite(d_fast)) and np.any(np.asarray(d_fast) != 0)
    assert_close(d_fast, d_generic, 1e-10, "d loss / d lr")


def _final_outcomes(fast, steps=6):
    """``(learning rate, init scale, data offset) -> (final loss, final gradient norm)`` of `dlnjax.train` on a
    small regression (widths (3, 3, 3, 1)); ``fast=None``: the default."""
    loss = Regression.random(jax.random.PRNGKey(5), 10, 3, 1, noise=0.3)
    dy = jax.random.normal(jax.random.PRNGKey(6), loss.targets.shape)
    kw = {} if fast is None else {"fast": fast}

    def f(lr, s, c):
        res = dlnjax.train(
            Regression(loss.inputs, loss.targets + c * dy),
            dlnjax.gaussian(jax.random.PRNGKey(7), (3, 3, 3, 1), s),
            optax.sgd(lr),
            steps,
            metrics=("loss", "grad_norm"),
            **kw,
        )
        return jnp.stack([res.history["loss"][-1], res.history["grad_norm"][-1]])

    return f


def test_fast_is_the_default_and_checked():
    """The default `train` runs the fast step (its program holds the custom_jvp around the custom_vmap rule),
    ``fast=False`` the generic one; ``fast`` must be a bool."""
    theta = jnp.array([0.1, 0.6, 0.0])
    program = lambda fast: str(jax.make_jaxpr(_final_outcomes(fast, steps=2))(*theta))
    default, generic = program(None), program(False)
    assert "custom_vmap_call" in default and "custom_jvp_call" in default
    assert "custom_vmap_call" not in generic
    loss = Factorization(jnp.ones((2, 3)))
    net0 = dlnjax.DLN(rand_layers(0, (3, 4, 2)))
    with pytest.raises(dlnjax.OptionError, match="fast"):
        dlnjax.train(loss, net0, optax.sgd(0.1), 2, fast="yes")


def test_derivatives_through_the_default_train():
    """d(final loss, final gradient norm) / d(learning rate, init scale, data offset) through the default (fast)
    `train`, reverse and forward mode under ``jax.vmap`` over thetas (the custom_vmap rule batching the primal,
    the custom_jvp's plain tangent batch-first), against reverse mode of ``fast=False`` and central finite
    differences of the default path. (Without vmap: tests/test_gradients.py's train test runs the default.)"""
    f, ref = (lambda th, g=g: g(*th) for g in (_final_outcomes(None), _final_outcomes(False)))
    thetas = jnp.array([[0.1, 0.6, 0.0], [0.2, 0.5, 0.3]])
    h = 1e-5
    stencil = h * jnp.concatenate([jnp.eye(3), -jnp.eye(3)])

    @jax.jit
    def run(thetas):
        vals = jax.vmap(jax.vmap(f))(thetas[:, None, :] + stencil[None])  # (theta, 6, outcome)
        return dict(
            rev=jax.vmap(jax.jacrev(f))(thetas),
            fwd=jax.vmap(jax.jacfwd(f))(thetas),
            ref=jax.vmap(jax.jacrev(ref))(thetas),
            fd=jnp.swapaxes((vals[:, :3] - vals[:, 3:]) / (2 * h), 1, 2),
        )

    out = {k: np.asarray(v) for k, v in run(thetas).items()}
    assert np.all(np.abs(out["ref"][:, 0]) > 1e-3)  # every parameter moves the final loss
    assert_close(out["rev"], out["ref"], 1e-10, "vmapped jacrev, default vs fast=False")
    assert_close(out["fwd"], out["ref"], 1e-10, "vmapped jacfwd, default vs fast=False")
    assert_close(out["rev"], out["fd"], 1e-6, "vmapped jacrev vs central differences")


@pytest.mark.slow
def test_second_derivatives_through_the_default_train():
    """``jax.hessian`` of the final loss through the default `train` (forward over reverse through the
    ``lax.scan``, whose linearization inlines the custom_jvp: the custom_vmap rule is then differentiated in
    forward mode with no batched input) against ``fast=False``."""
    f, ref = (lambda th, g=g: g(*th)[0] for g in (_final_outcomes(None), _final_outcomes(False)))
    theta = jnp.array([0.2, 0.5, 0.3])
    hess, hess_ref = (np.asarray(jax.jit(jax.hessian(g))(theta)) for g in (f, ref))
    assert np.all(np.isfinite(hess)) and np.all(np.abs(np.diag(hess_ref)) > 1e-3)
    assert_close(hess, hess_ref, 1e-9, "hessian, default vs fast=False")


def test_vmapped_default_train_with_batched_loss_data():
    """Plain vmapped `train` (default fast step) over batched loss data and one initial network, against
    ``fast=False``."""
    cs = jnp.array([0.0, 0.5, 1.0])
    fast, generic = (
        jax.jit(jax.vmap(_final_outcomes(fast), in_axes=(None, None, 0)))(0.1, 0.6, cs)
        for fast in (None, False)
    )
    assert len(set(np.asarray(fast[:, 0]).tolist())) == 3  # the data differ
    assert_close(fast, generic, 1e-11, "final loss and gradient norm per data set")
