"""The losses of `dlnjax.losses` and the activations of the training path, against direct numpy computations."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import HYP, rand_layers, rand_matrix
from hypothesis import given
from hypothesis import strategies as st

import dlnjax
from dlnjax.losses import Factorization, MatrixCompletion, MatrixSensing, Regression


def _real_grad(fn, X):
    """Gradient for Re Tr(A^* B): the conjugate of jax.grad (as in the library's flows)."""
    return jnp.conj(jax.grad(fn)(X))


def _fd_directional(fn, X, V, h=1e-6):
    return (fn(X + h * V) - fn(X - h * V)) / (2 * h)


def _check_gradient(fn, X, grad_expected, rng, is_complex):
    """The directional derivative along random V is Re <grad, V> (central differences, float64)."""
    g = _real_grad(fn, X)
    np.testing.assert_allclose(np.asarray(g), grad_expected, rtol=1e-10, atol=1e-12)
    V = rand_matrix(rng, X.shape, is_complex)
    fd = _fd_directional(fn, jnp.asarray(X), jnp.asarray(V))
    assert abs(fd - np.real(np.vdot(grad_expected, V))) <= 1e-6 * (1 + abs(fd))


@given(
    seed=st.integers(0, 2**16),
    is_complex=st.booleans(),
    shape=st.sampled_from([(3, 3), (4, 2), (2, 5)]),
)
@HYP
def test_matrix_completion_value_and_gradient(seed, is_complex, shape):
    rng = np.random.default_rng(seed)
    M = rand_matrix(rng, shape, is_complex)
    X = rand_matrix(rng, shape, is_complex)
    n = rng.integers(1, shape[0] * shape[1] + 1)
    flat = rng.choice(shape[0] * shape[1], n, replace=False)
    rows, cols = flat // shape[1], flat % shape[1]
    loss = MatrixCompletion(rows, cols, M[rows, cols], shape, truth=M)
    mask = np.zeros(shape)
    mask[rows, cols] = 1
    expected = np.sum(mask * np.abs(X - M) ** 2) / n  # mean over Omega, no 1/2
    assert abs(float(loss(jnp.asarray(X))) - expected) <= 1e-12 * (1 + expected)
    # E = (1/n) sum |X_ij - M_ij|^2: real gradient (2/n) mask * (X - M)
    _check_gradient(loss, jnp.asarray(X), 2 * mask * (X - M) / n, rng, is_complex)
    np.testing.assert_array_equal(np.asarray(loss.mask()), mask)
    rel = np.linalg.norm(X - M) / np.linalg.norm(M)
    assert abs(float(loss.test_error(jnp.asarray(X))) - rel) <= 1e-12


@given(
    seed=st.integers(0, 2**16),
    is_complex=st.booleans(),
    shape=st.sampled_from([(3, 3), (4, 2), (1, 5)]),
)
@HYP
def test_matrix_sensing_value_and_gradient(seed, is_complex, shape):
    rng = np.random.default_rng(seed)
    m = 7
    A = rand_matrix(rng, (m,) + shape, is_complex)
    y = rand_matrix(rng, (m,), is_complex)
    X = rand_matrix(rng, shape, is_complex)
    loss = MatrixSensing(A, y)
    r = np.array([np.sum(A[i] * X) for i in range(m)]) - y
    expected = np.mean(np.abs(r) ** 2)
    assert abs(float(loss(jnp.asarray(X))) - expected) <= 1e-12 * (1 + expected)
    # d/dX of |<A_i, X> - y_i|^2 for Re Tr(A^* B): 2 r_i conj(A_i)
    grad = 2 * np.sum(r[:, None, None] * np.conj(A), axis=0) / m
    _check_gradient(loss, jnp.asarray(X), grad, rng, is_complex)


def test_matrix_completion_is_sensing_with_matrix_units():
    rng = np.random.default_rng(0)
    M, X = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    rows, cols = np.array([0, 1, 3, 2]), np.array([2, 0, 1, 1])
    units = np.zeros((4, 4, 3))
    units[np.arange(4), rows, cols] = 1
    a = MatrixCompletion(rows, cols, M[rows, cols], (4, 3))(jnp.asarray(X))
    b = MatrixSensing(units, M[rows, cols])(jnp.asarray(X))
    assert abs(float(a) - float(b)) <= 1e-14


@given(seed=st.integers(0, 2**16), d_out=st.sampled_from([None, 1, 3]))
@HYP
def test_regression_value_gradient_and_least_squares(seed, d_out):
    rng = np.random.default_rng(seed)
    n, d_in = 9, 4
    x = rng.standard_normal((n, d_in))
    y = rng.standard_normal((n,)) if d_out is None else rng.standard_normal((n, d_out))
    Y = y.reshape(n, -1)
    X = rng.standard_normal((Y.shape[1], d_in))
    loss = Regression(x, y)
    assert loss.shape == (Y.shape[1], d_in)
    expected = (
        sum(np.sum((X @ x[i] - Y[i]) ** 2) for i in range(n)) / n
    )  # (1/n) sum ||f(x_i) - y_i||^2, no 1/2
    assert abs(float(loss(jnp.asarray(X))) - expected) <= 1e-12 * (1 + expected)
    _check_gradient(loss, jnp.asarray(X), 2 * (X @ x.T - Y.T) @ x / n, rng, False)
    np.testing.assert_allclose(np.asarray(loss.covariance()), x.T @ x / n, rtol=1e-13)
    w_star = np.linalg.lstsq(x, Y, rcond=None)[0].T
    np.testing.assert_allclose(np.asarray(loss.least_squares()), w_star, rtol=1e-10, atol=1e-12)
    # the least-squares solution is a critical point of E
    assert float(jnp.linalg.norm(jax.grad(loss)(loss.least_squares()))) < 1e-10


@given(seed=st.integers(0, 2**16), is_complex=st.booleans())
@HYP
def test_factorization_value_and_gradient(seed, is_complex):
    rng = np.random.default_rng(seed)
    T, X = rand_matrix(rng, (3, 5), is_complex), rand_matrix(rng, (3, 5), is_complex)
    loss = Factorization(T)
    expected = 0.5 * np.sum(np.abs(X - T) ** 2)  # with the 1/2
    assert abs(float(loss(jnp.asarray(X))) - expected) <= 1e-12 * (1 + expected)
    _check_gradient(loss, jnp.asarray(X), X - T, rng, is_complex)
    assert float(loss.test_error(jnp.asarray(T))) == 0.0


def test_random_instances_have_the_promised_structure():
    key = jr.PRNGKey(3)
    mc = MatrixCompletion.random(key, (20, 15), 3, 100)
    M = np.asarray(mc.truth)
    s = np.linalg.svd(M, compute_uv=False)
    assert (
        abs(np.linalg.norm(M) - 1) < 1e-12 and s[2] > 1e-6 and s[3] < 1e-12
    )  # rank 3, unit Frobenius norm
    flat = np.asarray(mc.rows) * 15 + np.asarray(mc.cols)
    assert len(np.unique(flat)) == 100  # distinct observed entries
    np.testing.assert_array_equal(
        np.asarray(mc.values), M[np.asarray(mc.rows), np.asarray(mc.cols)]
    )
    assert float(mc(mc.truth)) == 0.0
    ms = MatrixSensing.random(key, (4, 6), 2, 30)
    assert float(ms(ms.truth)) < 1e-28 and ms.measurements.shape == (30, 4, 6)
    rg = Regression.random(key, 50, 5, noise=0.0)
    assert abs(float(jnp.linalg.norm(rg.truth)) - 1) < 1e-12 and float(rg(rg.truth)) < 1e-28


def test_losses_are_pytrees_under_vmap_and_jit():
    keys = jr.split(jr.PRNGKey(0), 4)
    batch = jax.vmap(lambda k: MatrixCompletion.random(k, (5, 5), 1, 10))(keys)
    X = jnp.ones((5, 5))
    vals = jax.jit(jax.vmap(lambda l: l(X)))(batch)
    for i, k in enumerate(keys):
        assert abs(float(vals[i]) - float(MatrixCompletion.random(k, (5, 5), 1, 10)(X))) <= 1e-14


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MatrixCompletion([0, 1], [0], [1.0, 2.0], (2, 2)), "same length"),
        (lambda: MatrixCompletion([0, 2], [0, 1], [1.0, 2.0], (2, 2)), "rows must lie in"),
        (lambda: MatrixCompletion([0, 1], [0, -1], [1.0, 2.0], (2, 2)), "cols must lie in"),
        (lambda: MatrixCompletion([0.0], [0], [1.0], (2, 2)), "integer indices"),
        (lambda: MatrixCompletion([0], [0], [np.nan], (2, 2)), "non-finite"),
        (lambda: MatrixCompletion([], [], [], (2, 2)), "at least one"),
        (
            lambda: MatrixCompletion([0], [0], [1.0], (2, 2), truth=np.ones((3, 2))),
            "truth must have shape",
        ),
        (lambda: MatrixSensing(np.ones((3, 2, 2)), np.ones(2)), "as many values"),
        (lambda: MatrixSensing(np.ones((2, 2)), np.ones(2)), "3 dimensions"),
        (lambda: Regression(np.ones((4, 3)), np.ones(5)), "same n"),
        (lambda: Regression(np.ones((4, 3)), np.ones((4, 2, 1))), "1 or 2 dimensions"),
        (lambda: Regression(np.ones((4, 3)), np.full(4, np.inf)), "non-finite"),
        (lambda: Factorization(np.ones(3)), "2 dimensions"),
        (lambda: MatrixCompletion.random(jr.PRNGKey(0), (3, 3), 4, 2), "rank must lie"),
        (lambda: MatrixCompletion.random(jr.PRNGKey(0), (3, 3), 1, 10), "n_observed must lie"),
    ],
)
def test_losses_reject_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_losses_reject_wrong_shaped_X_and_missing_truth():
    loss = Regression(np.ones((4, 3)), np.ones(4))
    with pytest.raises(ValueError, match=r"X must have shape \(1, 3\)"):
        loss(jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="needs a ground truth"):
        loss.test_error(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"X must have shape \(2, 2\)"):
        Factorization(np.eye(2))(jnp.ones((2, 3)))


# ------------------------------------------------------------------------------------------------
# Activations and the network function
# ------------------------------------------------------------------------------------------------


def _np_forward(layers, x, phi):
    h = x.T
    for k, w in enumerate(layers):
        h = w @ h
        if k < len(layers) - 1:
            h = phi(h)
    return h.T


_PHI = {
    "identity": lambda h: h,
    "relu": lambda h: np.maximum(h, 0),
    "leaky_relu": lambda h: np.where(h > 0, h, 0.01 * h),
}


@pytest.mark.parametrize("name", ["identity", "relu", "leaky_relu", "gelu"])
@pytest.mark.parametrize("widths", [(3, 4, 2), (3, 5, 2, 6, 1), (4, 2), (2, 3, 3, 3, 2)])
def test_forward_matches_an_explicit_loop(name, widths):
    layers = rand_layers(7, widths)
    x = np.random.default_rng(1).standard_normal((6, widths[0]))
    net = dlnjax.DLN(layers, activation=name)
    if name == "gelu":
        from math import erf, sqrt

        phi = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / sqrt(2))))
    else:
        phi = _PHI[name]
    np.testing.assert_allclose(
        np.asarray(dlnjax.forward(net, jnp.asarray(x))),
        _np_forward(layers, x, phi),
        rtol=1e-12,
        atol=1e-13,
    )


def test_homogeneous_activations_are_positively_homogeneous():
    layers = rand_layers(2, (3, 4, 4, 2))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    for name in ("relu", "leaky_relu"):
        net = dlnjax.DLN(layers, activation=name)
        scaled = dlnjax.DLN([2.0 * w for w in layers], activation=name)
        # f(2W_1, ..., 2W_N) = 2^N f(W): degree-one homogeneity layer by layer (seed 002)
        np.testing.assert_allclose(
            np.asarray(dlnjax.forward(scaled, x)),
            8 * np.asarray(dlnjax.forward(net, x)),
            rtol=1e-12,
        )
        assert dlnjax.Activation(name).is_homogeneous
    assert not dlnjax.Activation("gelu").is_homogeneous


def test_network_loss_linear_and_nonlinear():
    layers = rand_layers(4, (3, 4, 2))
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    loss = Regression(x, y)
    lin = dlnjax.DLN(layers)
    X = layers[1] @ layers[0]
    assert abs(float(dlnjax.network_loss(loss, lin)) - np.sum((x @ X.T - y) ** 2) / 8) <= 1e-12
    relu = lin.with_activation("relu")
    assert relu.activation.name == "relu" and lin.activation.is_linear
    expected = np.sum((_np_forward(layers, x, _PHI["relu"]) - y) ** 2) / 8
    assert abs(float(dlnjax.network_loss(loss, relu)) - expected) <= 1e-12
    # the gradient of a nonlinear network's loss, against a finite difference along a random direction
    g = dlnjax.network_gradient(loss, relu)
    V = [rng.standard_normal(w.shape) for w in layers]
    f = lambda t: float(
        dlnjax.network_loss(
            loss, dlnjax.DLN([w + t * v for w, v in zip(layers, V)], activation="relu")
        )
    )
    fd = (f(1e-6) - f(-1e-6)) / 2e-6
    assert abs(fd - sum(np.sum(np.asarray(a) * v) for a, v in zip(g.layers, V))) < 1e-6 * (
        1 + abs(fd)
    )


def test_linear_only_geometry_rejects_nonlinear_networks():
    relu = dlnjax.DLN(rand_layers(0, (2, 3, 2)), activation="relu")
    for fn in (dlnjax.end_to_end, dlnjax.partial_products, dlnjax.fiber_l2_gradient):
        with pytest.raises(ValueError, match="linear networks only"):
            fn(relu)
    with pytest.raises(ValueError, match="linear networks only"):
        dlnjax.flows.KirwanNess()(0.0, relu)
    with pytest.raises(ValueError, match="network_loss"):
        dlnjax.network_gradient(Factorization(np.eye(2)), relu)
    with pytest.raises(ValueError, match="activation must be one of"):
        dlnjax.DLN(rand_layers(0, (2, 2)), activation="tanh")
    with pytest.raises(ValueError, match="needs real weights"):
        dlnjax.DLN([np.eye(2) * 1j], activation="relu")
    with pytest.raises(ValueError, match=r"inputs must have shape \(n, d_0\)"):
        dlnjax.forward(relu, jnp.ones((4, 3)))
