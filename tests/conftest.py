"""Shared helpers for the dlnjax test suite.

Every reference value here is computed directly with plain numpy / jax.numpy (explicit Python-loop
products, dense Jacobians of an explicit product, ``np.linalg``), never with dlnjax itself.
The tests run in float64: x64 is switched on here, at import, before any array is created.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# JAX's persistent compilation cache, shared by the xdist workers and by the processes the tests start
# (the CLI, notebook kernels), fresh for each run: the suite is compile-bound and many programs recur
# (a ``--quick`` experiment run by its test and again by its notebook: 66 s cold, 28 s warm on the 2-core
# CPU). Cached executables are the ones XLA would compile again (the key hashes the program, options
# and versions), so no result changes. Set by the controller at import, inherited by workers and
# subprocesses; a cache dir set by the user is used as it is.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="dlnjax-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Compile faster, run a little slower: this suite is compile-bound (most programs run for milliseconds after a
# second of compiling). XLA:CPU's legacy (LLVM IR) fusion emitters and LLVM at -O0: on the 2-core CPU the default
# suite's worker time 1255 -> 870 s (wall 654 -> 464 s), the emitters having taken it from 52.5 to 37.6 CPU-minutes
# before (docs/performance.md, lab notes "Compiler options"); every test passes at unchanged tolerances. The
# library's default (`configure_cpu`) keeps XLA's own choices, which compile the long `train` programs faster and
# run them at full speed. Inherited by the processes the tests start; a user's XLA_FLAGS win, flag by flag.
_TEST_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=0")
_flags = os.environ.get("XLA_FLAGS", "")
for _flag in _TEST_XLA_FLAGS:
    if _flag.split("=")[0] not in _flags:
        _flags = f"{_flags} {_flag}".strip()
os.environ["XLA_FLAGS"] = _flags

# For the few programs that run long (Monte Carlo over thousands of paths), pass this to `jax.jit`'s
# ``compiler_options``: XLA's default optimization level for that program alone (a 2000-path Langevin run:
# -O0 compiles in 4.4 s and runs 22 s, the default 10.2 s and 6 s).
RUN_BOUND = {"xla_backend_optimization_level": 3}

from dlnjax._cpu import configure_cpu  # noqa: E402

# One OpenBLAS thread and fast tiny fusions (see dlnjax/_cpu.py): set before JAX's backend starts.
configure_cpu()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Deterministic, database-free hypothesis runs: the suite must be reproducible in CI, and
# each example compiles small XLA programs, so no deadline.
settings.register_profile(
    "dlnjax",
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("dlnjax")

# Settings for the cheap (non-ODE) identity tests.
HYP = settings(max_examples=10, deadline=None)

# Tolerances. Identities evaluated in float64 on O(1) random instances: a few hundred ulps.
TIGHT = 1e-12


# --------------------------------------------------------------------------------------------------
# Random instances (numpy, independent of dlnjax's own constructors)
# --------------------------------------------------------------------------------------------------


def rand_matrix(rng: np.random.Generator, shape, is_complex: bool) -> np.ndarray:
    """Standard Gaussian entries (complex: E|z|^2 = 1)."""
    if is_complex:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return rng.standard_normal(shape)


def rand_layers(
    seed: int, widths, is_complex: bool = False, scale: float = 1.0
) -> list[np.ndarray]:
    """Random layers W_k of shape (d_k, d_{k-1}), entries of standard deviation scale / sqrt(d_{k-1})."""
    rng = np.random.default_rng(seed)
    return [
        scale * rand_matrix(rng, (widths[k + 1], widths[k]), is_complex) / np.sqrt(widths[k])
        for k in range(len(widths) - 1)
    ]


def rand_invertible(rng: np.random.Generator, d: int, is_complex: bool) -> np.ndarray:
    """A well-conditioned invertible matrix Q1 diag(s) Q2, s in [0.5, 2] (condition number <= 4)."""
    q1, _ = np.linalg.qr(rand_matrix(rng, (d, d), is_complex))
    q2, _ = np.linalg.qr(rand_matrix(rng, (d, d), is_complex))
    s = rng.uniform(0.5, 2.0, d)
    return (q1 * s) @ q2


def rand_unitary(rng: np.random.Generator, d: int, is_complex: bool) -> np.ndarray:
    q, _ = np.linalg.qr(rand_matrix(rng, (d, d), is_complex))
    return q


# --------------------------------------------------------------------------------------------------
# Explicit references
# --------------------------------------------------------------------------------------------------


def ct(a):
    """Conjugate transpose of the last two axes (numpy or jax arrays)."""
    return (
        np.conj(np.swapaxes(a, -1, -2))
        if isinstance(a, np.ndarray)
        else jnp.conj(jnp.swapaxes(a, -1, -2))
    )


def explicit_product(layers):
    """X = W_N ... W_1 by a Python loop (works on numpy arrays and on jax tracers)."""
    x = layers[0]
    for w in layers[1:]:
        x = w @ x
    return x


def explicit_partials(layers):
    """Lists P = [P_1..P_N], Q = [Q_1..Q_N]: P_k = W_N ... W_{k+1}, Q_k = W_{k-1} ... W_1."""
    layers = [np.asarray(w) for w in layers]
    n = len(layers)
    dN, d0 = layers[-1].shape[0], layers[0].shape[1]
    P, Q = [], []
    for k in range(1, n + 1):
        p = np.eye(dN, dtype=layers[0].dtype)
        for w in reversed(layers[k:]):  # W_N ... W_{k+1}
            p = p @ w
        q = np.eye(d0, dtype=layers[0].dtype)
        for w in layers[: k - 1]:  # W_{k-1} ... W_1
            q = w @ q
        P.append(p)
        Q.append(q)
    return P, Q


def explicit_moments(layers):
    """[G_1..G_{N-1}], G_k = W_k W_k^* - W_{k+1}^* W_{k+1} (layers as a list, W_k = layers[k-1])."""
    return [
        layers[k] @ ct(layers[k]) - ct(layers[k + 1]) @ layers[k + 1]
        for k in range(len(layers) - 1)
    ]


def real_inner(a, b) -> float:
    """sum_k Re Tr(A_k^* B_k) over two lists of layers."""
    return float(sum(np.sum(np.real(np.conj(np.asarray(x)) * np.asarray(y))) for x, y in zip(a, b)))


def sq_norm(layers) -> float:
    return real_inner(layers, layers)


def _split(layers, is_complex):
    parts = []
    for w in layers:
        w = np.asarray(w)
        parts.append(np.real(w).ravel())
        if is_complex:
            parts.append(np.imag(w).ravel())
    return np.concatenate(parts)


def _unsplit(theta, shapes, is_complex):
    out, i = [], 0
    for shp in shapes:
        n = int(np.prod(shp))
        re = theta[i : i + n].reshape(shp)
        i += n
        if is_complex:
            im = theta[i : i + n].reshape(shp)
            i += n
            out.append(re + 1j * im)
        else:
            out.append(re)
    return out


def dense_jacobian(layers) -> np.ndarray:
    """The real Jacobian of W -> X(W) (real and imaginary parts as separate real coordinates).

    Obtained with jax.jacfwd of the explicit product; rows: Re X (and Im X), columns: Re W_k (and Im W_k).
    For that coordinate system the Euclidean inner product is exactly Re Tr(A^* B).
    """
    layers = [np.asarray(w) for w in layers]
    is_complex = np.iscomplexobj(layers[0])
    shapes = [w.shape for w in layers]
    theta0 = _split(layers, is_complex)

    def f(theta):
        x = explicit_product(_unsplit(theta, shapes, is_complex))
        return (
            jnp.concatenate([jnp.real(x).ravel(), jnp.imag(x).ravel()]) if is_complex else x.ravel()
        )

    # forward mode pushes one tangent per column, reverse mode one cotangent per row: take the fewer
    rows = layers[-1].shape[0] * layers[0].shape[1] * (2 if is_complex else 1)
    jac = jax.jacrev if rows < theta0.size else jax.jacfwd
    return np.asarray(jax.jit(jac(f))(jnp.asarray(theta0)))


def dense_tangent_projection(layers, V, rcond: float = 1e-10):
    """Reference Pi_T(V) = (I - J^+ J) V, the orthogonal projection onto ker dX, via np.linalg.pinv."""
    is_complex = np.iscomplexobj(np.asarray(layers[0])) or np.iscomplexobj(np.asarray(V[0]))
    layers = [np.asarray(w, complex if is_complex else float) for w in layers]
    J = dense_jacobian(layers)
    v = _split(V, is_complex)
    pv = v - np.linalg.pinv(J, rcond=rcond) @ (J @ v)
    return _unsplit(pv, [w.shape for w in layers], is_complex)


# --------------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------------


def _leaves(t):
    if isinstance(t, (list, tuple)):
        return [np.asarray(x) for x in t]
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(t)]


def tree_max_abs_diff(a, b) -> float:
    """max |a - b| over all leaves of two pytrees (or lists of arrays) of equal structure."""
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb), f"structures differ: {len(la)} vs {len(lb)} leaves"
    out = 0.0
    for x, y in zip(la, lb):
        assert x.shape == y.shape, f"shape mismatch {x.shape} vs {y.shape}"
        if x.size:
            out = max(out, float(np.max(np.abs(x - y))))
    return out


def tree_max_abs(a) -> float:
    return max([float(np.max(np.abs(x))) for x in _leaves(a) if x.size] + [0.0])


def rel_diff(a, b) -> float:
    """max |a - b| / max(max |b|, 1e-300)."""
    return tree_max_abs_diff(a, b) / max(tree_max_abs(b), 1e-300)


def assert_close(a, b, rtol: float = TIGHT, what: str = ""):
    err = rel_diff(a, b)
    assert err <= rtol, f"{what}: relative max-abs difference {err:.3e} > {rtol:.1e}"


# --------------------------------------------------------------------------------------------------
# Padding of the stored arrays (non-uniform inner widths)
# --------------------------------------------------------------------------------------------------


def padding_masks(widths):
    """Boolean masks, shaped like DLN.arrays(), that are True exactly on the zero padding."""
    n = len(widths) - 1
    if n == 1:
        return (np.zeros((widths[1], widths[0]), bool),)
    m = max(widths[1:-1])
    first = np.ones((m, widths[0]), bool)
    first[: widths[1]] = False
    inner = np.ones((n - 2, m, m), bool)
    for k in range(n - 2):
        inner[k, : widths[k + 2], : widths[k + 1]] = False
    last = np.ones((widths[-1], m), bool)
    last[:, : widths[-2]] = False
    return first, inner, last


def padding_max_abs(net) -> float:
    """max |entry| over the padding of a DLN (leading batch/time axes allowed)."""
    out = 0.0
    for a, mask in zip(net.arrays(), padding_masks(net.widths)):
        a = np.asarray(a)
        if mask.any():
            out = max(out, float(np.max(np.abs(a[..., mask]))))
    return out


# --------------------------------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**31 - 1)


@st.composite
def widths_st(draw, min_depth=1, max_depth=5, max_width=5):
    n = draw(st.integers(min_depth, max_depth))
    return tuple(draw(st.integers(1, max_width)) for _ in range(n + 1))


NONUNIFORM = (3, 4, 6, 5, 2)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def explicit_tangent_vector(W, a):
    """Explicit ``(w_a)_k = a_k W_k - W_k a_{k-1}`` with ``a_0 = a_N = 0`` (seed 001, §2.3)."""
    aa = [None] + list(a) + [None]
    out = []
    for k in range(1, len(W) + 1):
        v = np.zeros_like(W[k - 1])
        if aa[k] is not None:
            v = v + aa[k] @ W[k - 1]
        if aa[k - 1] is not None:
            v = v - W[k - 1] @ aa[k - 1]
        out.append(v)
    return out


# --------------------------------------------------------------------------------------------------
# Reading what the experiments write
# --------------------------------------------------------------------------------------------------


def csv_rows(path) -> list[dict]:
    """The rows of a CSV file as dicts (header -> string)."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# The files that take longest, longest first (worker seconds in the 2026-12-04 suite runs on the 2-core CPU,
# ~15-100 s each). pytest-xdist hands whole files to its workers (--dist loadfile) in collection order (with
# --no-loadscope-reorder, pyproject.toml; its default order is by number of tests, which started the long files of
# few tests last): starting the long ones first leaves the short ones to fill the end, instead of one worker
# finishing a long file alone. A stale list costs only balance.
LONG_FILES = (
    "test_stiff.py",
    "test_gradients.py",
    "test_sweep.py",
    "test_langevin.py",
    "test_flows.py",
    "test_train_fast.py",
    "test_network.py",
    "test_fiber_cg.py",
    "test_marion_chizat.py",
    "test_precision.py",
    "test_geometry.py",
    "test_end_to_end.py",
    "test_cli.py",
    "test_cohen_menon_veraszto.py",
    "test_fast_slow.py",
    "test_diagnostics.py",
    "test_padding.py",
    "test_simulate.py",
    "test_linear_systems.py",
    "test_du_hu_lee.py",
    "test_sweep_plot.py",
    "test_rank_deficient.py",
    "test_losses.py",
    "test_systems_flows.py",
    "test_systems_gramians.py",
    "test_init_scale_tuning.py",
    "test_train.py",
    "test_systems_core.py",
    "test_fiber_langevin.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(
        key=lambda item: rank.get(item.path.name, len(LONG_FILES))
    )  # stable: file order kept otherwise


def pytest_unconfigure(config):
    # The process that made the cache removes it (the controller, under xdist: it ends after its workers).
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------------------

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"


def execute_notebook(name: str) -> None:
    """Execute ``notebooks/<name>`` in a fresh kernel: no cell may fail, and it must draw a figure.

    Called for every notebook by tests/test_notebooks.py (marked ``notebook``: ``make test-notebooks``).
    """
    import nbformat
    from nbclient import NotebookClient

    path = NOTEBOOK_DIR / name
    nb = nbformat.read(path, as_version=4)
    # The "python3" kernel is launched with this interpreter (jupyter_client substitutes sys.executable).
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), (
        f"{name} should draw at least one figure"
    )
