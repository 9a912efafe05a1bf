"""pyopt.hessian: Hutchinson against known Hessians, GNB against the explicit Gauss-Newton diagonal,
sample_labels against softmax probabilities. Seeded; statistical tolerances are in standard errors."""
import numpy as np
import pytest

from pyopt.hessian import gnb_estimate, hutchinson_estimate, sample_labels


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ----- Hutchinson -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hutchinson_diagonal_hessian_is_exact(dtype):
    rng = np.random.default_rng(0)
    diags = [rng.uniform(0.1, 5.0, s).astype(dtype) for s in [(1,), (7,), (3, 5)]]
    params = [np.zeros_like(d) for d in diags]
    seen = []

    def hvp(us):
        seen.append(us)
        return [d * u for d, u in zip(diags, us)]  # f = ½ Σ d·x² → H·u = d⊙u

    est = hutchinson_estimate(hvp, params, np.random.default_rng(1), n_samples=3)
    assert len(seen) == 3
    for us in seen:
        for u, p in zip(us, params):
            assert u.dtype == p.dtype and u.shape == p.shape
            assert set(np.unique(u)) <= {-1.0, 1.0}
    for e, d in zip(est, diags):
        assert e.dtype == d.dtype
        np.testing.assert_array_equal(e, d)


def test_hutchinson_dense_hessian_converges_to_its_diagonal():
    # f(x) = ½ xᵀHx over the concatenation of two params (shapes (2, 3) and (4,)), H dense SPD.
    rng = np.random.default_rng(2)
    n = 10
    a = rng.standard_normal((n, n))
    H = a @ a.T / n + np.eye(n)
    params = {"w": np.zeros((2, 3)), "b": np.zeros(4)}

    def hvp(us):
        flat = np.concatenate([us["w"].ravel(), us["b"]])
        hu = H @ flat
        return {"w": hu[:6].reshape(2, 3), "b": hu[6:]}

    samples = 20000
    est = hutchinson_estimate(hvp, params, np.random.default_rng(3), n_samples=samples)
    assert isinstance(est, dict) and set(est) == {"w", "b"}
    got = np.concatenate([est["w"].ravel(), est["b"]])
    # u_i (Hu)_i = H_ii + Σ_{j≠i} H_ij u_i u_j: variance Σ_{j≠i} H_ij², standard error / √samples
    stderr = np.sqrt(((H**2).sum(axis=1) - np.diag(H) ** 2) / samples)
    z = np.abs(got - np.diag(H)) / stderr
    assert z.max() < 5, z
    assert not np.array_equal(got, np.diag(H))  # the off-diagonal noise is there, and averages out
    # one probe alone is far noisier
    one = hutchinson_estimate(hvp, params, np.random.default_rng(4))
    assert np.abs(np.concatenate([one["w"].ravel(), one["b"]]) - np.diag(H)).max() > 5 * stderr.max()


def test_hutchinson_errors():
    rng = np.random.default_rng(0)
    params = [np.zeros(3), np.zeros((2, 2), np.float32)]
    ok = lambda us: [u * 2 for u in us]  # noqa: E731
    with pytest.raises(ValueError, match=r"hvp result\[1\] has shape \(4,\), its param has shape \(2, 2\)"):
        hutchinson_estimate(lambda us: [us[0], us[1].ravel()], params, rng)
    with pytest.raises(ValueError, match="returned 1 arrays for 2 params"):
        hutchinson_estimate(lambda us: [us[0]], params, rng)
    with pytest.raises(TypeError, match="must return a list"):
        hutchinson_estimate(lambda us: None, params, rng)
    with pytest.raises(TypeError, match="returned a dict"):
        hutchinson_estimate(lambda us: {"a": us[0]}, params, rng)
    with pytest.raises(ValueError, match="returned entries"):
        hutchinson_estimate(lambda us: {"a": us["a"]}, {"a": np.zeros(2), "b": np.zeros(2)}, rng)
    with pytest.raises(ValueError, match="n_samples"):
        hutchinson_estimate(ok, params, rng, n_samples=0)
    with pytest.raises(TypeError, match="Generator"):
        hutchinson_estimate(ok, params, 0)
    with pytest.raises(TypeError, match=r"params\[0\].*int64"):
        hutchinson_estimate(ok, [np.zeros(3, np.int64)], rng)
    with pytest.raises(TypeError, match="hvp must be callable"):
        hutchinson_estimate(None, params, rng)
    with pytest.raises(ValueError, match="no params"):
        hutchinson_estimate(ok, [], rng)


# ----- sample_labels ----------------------------------------------------------------------------
def test_sample_labels_frequencies_match_softmax():
    rng = np.random.default_rng(5)
    logits = np.array([[0.0, 1.0, 2.0, -1.0], [3.0, 3.0, -2.0, 0.5], [-5.0, 0.0, 5.0, 1.0]])
    reps = 100000
    labels = sample_labels(np.repeat(logits[None], reps, axis=0), np.random.default_rng(6))
    assert labels.shape == (reps, 3) and labels.dtype == np.int64
    for r in range(3):
        p = softmax(logits[r])
        freq = np.bincount(labels[:, r], minlength=4) / reps
        stderr = np.sqrt(p * (1 - p) / reps) + 1e-12
        assert (np.abs(freq - p) / stderr).max() < 5, (r, freq, p)
    del rng


def test_sample_labels_stable_and_masked():
    # a huge offset changes nothing (no overflow), -inf classes are never drawn, float32 works
    logits = np.array([1000.0, 1001.0, -np.inf, 999.0], np.float32)
    reps = 50000
    labels = sample_labels(np.tile(logits, (reps, 1)), np.random.default_rng(7))
    freq = np.bincount(labels, minlength=4) / reps
    p = softmax(np.array([1.0, 2.0, -np.inf, 0.0]))
    assert freq[2] == 0
    assert (np.abs(freq - p) / (np.sqrt(p * (1 - p) / reps) + 1e-12)).max() < 5
    assert sample_labels(np.array([0.0, 50.0]), np.random.default_rng(0)).shape == ()
    same = [sample_labels(np.zeros((5, 3)), np.random.default_rng(8)) for _ in range(2)]
    np.testing.assert_array_equal(*same)  # seeded: reproducible


def test_sample_labels_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="NaN"):
        sample_labels(np.array([[0.0, np.nan]]), rng)
    with pytest.raises(ValueError, match="all -inf"):
        sample_labels(np.array([[0.0, 1.0], [-np.inf, -np.inf]]), rng)
    with pytest.raises(ValueError, match="class axis"):
        sample_labels(np.zeros((3, 0)), rng)
    with pytest.raises(TypeError, match="int64"):
        sample_labels(np.zeros((2, 3), np.int64), rng)
    with pytest.raises(TypeError, match="Generator"):
        sample_labels(np.zeros((2, 3)), np.random)


# ----- Gauss-Newton-Bartlett --------------------------------------------------------------------
def test_gnb_estimate_is_elementwise_square_in_kind():
    rng = np.random.default_rng(9)
    g32, g64 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5)
    keep = g32.copy()
    out = gnb_estimate([g32, g64])
    assert isinstance(out, list) and out[0].dtype == np.float32 and out[1].dtype == np.float64
    np.testing.assert_array_equal(out[0], g32 * g32)
    np.testing.assert_array_equal(out[1], g64 * g64)
    assert out[0] is not g32
    np.testing.assert_array_equal(g32, keep)
    d = gnb_estimate({"w": g32, "b": g64})
    assert list(d) == ["w", "b"]
    np.testing.assert_array_equal(d["b"], g64**2)
    with pytest.raises(TypeError, match=r"sampled_grads\[1\].*int64"):
        gnb_estimate([g32, np.zeros(3, np.int64)])
    with pytest.raises(TypeError, match="list or a dict"):
        gnb_estimate(g32)


def sampled_grad(X, W, b, labels):
    """Gradient of the mean cross-entropy of softmax(XW + b) on `labels`: (dW, db)."""
    B = X.shape[0]
    P = softmax(X @ W + b)
    R = P.copy()
    R[np.arange(B), labels] -= 1.0
    return X.T @ R / B, R.sum(axis=0) / B


def test_gnb_on_softmax_regression_matches_gauss_newton_diagonal():
    # E over sampled labels of B·ĝ⊙ĝ is the diagonal of the batch-mean Gauss-Newton matrix
    # (1/B) Σ_b J_bᵀ (diag(p_b) − p_b p_bᵀ) J_b; J_b is built explicitly per example here.
    rng = np.random.default_rng(10)
    B, D, K = 8, 3, 4
    X = rng.standard_normal((B, D))
    W = rng.standard_normal((D, K))
    b = rng.standard_normal(K) * 0.5
    P = softmax(X @ W + b)
    n = D * K + K
    GN = np.zeros((n, n))
    for i in range(B):
        J = np.zeros((K, n))  # d logits / d (vec(W), b); vec(W) row-major as W.ravel()
        for k in range(K):
            J[k, k : D * K : K] = X[i]
            J[k, D * K + k] = 1.0
        Hl = np.diag(P[i]) - np.outer(P[i], P[i])
        GN += J.T @ Hl @ J / B
    expect = np.diag(GN)

    draws = 20000
    sample_rng = np.random.default_rng(11)
    acc = np.zeros(n)
    acc_sq = np.zeros(n)
    for _ in range(draws):
        labels = sample_labels(X @ W + b, sample_rng)
        est = gnb_estimate(dict(zip(("W", "b"), sampled_grad(X, W, b, labels))))
        v = B * np.concatenate([est["W"].ravel(), est["b"]])
        acc += v
        acc_sq += v * v
    mean = acc / draws
    stderr = np.sqrt((acc_sq / draws - mean**2) / draws)
    z = np.abs(mean - expect) / stderr
    assert z.max() < 5, (z, mean, expect)
    np.testing.assert_allclose(mean, expect, rtol=0.1)
    # labels NOT sampled from the model (a fixed label) give a biased estimate: the test can tell
    fixed = gnb_estimate(list(sampled_grad(X, W, b, np.zeros(B, np.int64))))
    wrong = B * np.concatenate([fixed[0].ravel(), fixed[1]])
    assert np.abs(wrong - expect).max() > 10 * stderr.max()
