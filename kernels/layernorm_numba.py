"""LayerNorm LSTM and LayerNorm GRU kernels, Numba backend: forward and BPTT.

Read side by side with the reference (``fastrnn/reference.py``, "Layer-
normalised cells"), which states the equations.  These kernels trust their
inputs: ``fastrnn.layernorm`` has checked shapes and dtypes, made every array
C-contiguous and of one dtype, filled the LayerNorm parameters that were None
(gains 1, biases 0) and allocated every buffer.

The shape of the work is the plain cells' (kernels/lstm_numba.py): the input
products of a chunk of steps in one GEMM, normalised row by row off the
recurrence; per step one product h_{t-1} W_hh^T (BLAS) and one pass over each
row: the recurrent LayerNorm's mean and variance, then the gates, then (LSTM)
the cell state's LayerNorm, whose statistics need the whole row of
f * c_{t-1} + i * g first.  The backward keeps every step's gradient of the
gates (da) and of the recurrent product (dah), so that dx, dW_ih, dW_hh and
the LayerNorm parameters' gradients are each one product over all T*B rows
after the loop.

Saved arrays have ``ring`` rows of steps: T in training; in inference a
chunk's worth, reused (step t in row t % ring).  Shape letters: T, B, I, H;
GH = G*H (4H: i, f, g, o; 3H: r, z, n).
"""
import numpy as np

from ._numba_util import fast_tanh, jit, jit_sums, sigmoid


@jit_sums
def normalise_row(a, eps):
    """One row a (N,) in place to (a - mean) / sqrt(var + eps), LayerNorm
    without its affine part; returns 1 / sqrt(var + eps).  The statistics
    in float64 (two passes: the mean, then the variance of the centred row)."""
    N = a.shape[0]
    mean = 0.0
    for j in range(N):
        mean += a[j]
    mean /= N
    var = 0.0
    for j in range(N):
        d = a[j] - mean
        var += d * d
    s = 1 / np.sqrt(var / N + eps)
    m, sa = a.dtype.type(mean), a.dtype.type(s)
    for j in range(N):
        a[j] = (a[j] - m) * sa
    return sa


@jit
def normalise_rows(a, eps, rstd):
    """Each row of a (R, N) by normalise_row, its rstd into rstd (R,)."""
    for r in range(a.shape[0]):
        rstd[r] = normalise_row(a[r], eps)


@jit_sums
def norm_backward_row(dy, gamma, a_hat, rstd, da):
    """da (N,) = the gradient of LN's input from dy (N,), the gradient of its
    output: g = dy * gamma, rstd * (g - mean(g) - a_hat * mean(g * a_hat))
    (the means in float64).  da may be dy."""
    N = dy.shape[0]
    m1 = 0.0
    m2 = 0.0
    for j in range(N):
        g = dy[j] * gamma[j]
        m1 += g
        m2 += g * a_hat[j]
    k1, k2 = dy.dtype.type(m1 / N), dy.dtype.type(m2 / N)
    for j in range(N):
        da[j] = rstd * (dy[j] * gamma[j] - k1 - a_hat[j] * k2)


@jit
def input_norms(x2d, W_ih, eps, t0, t1, B, ring, i_hat, rstd_i):
    """Steps t0 .. t1-1's input products x_t W_ih^T, normalised, into their
    rows of i_hat (ring, B, GH) and rstd_i (ring, B): one GEMM and one pass.
    The chunk's rows of the ring are consecutive (t0 % ring + t1 - t0 <= ring)."""
    s0 = t0 % ring
    n = (t1 - t0) * B
    GH = i_hat.shape[2]
    rows = i_hat.reshape(ring * B, GH)[s0 * B:s0 * B + n]
    np.dot(x2d[t0 * B:t1 * B], W_ih.T, rows)
    normalise_rows(rows, eps, rstd_i.reshape(ring * B)[s0 * B:s0 * B + n])


@jit
def lstm_forward_steps(x2d, W_ih, W_hh, gamma_i, beta_i, gamma_h, beta_h, gamma_c, beta_c,
                       lengths, eps, t0, t1, h, c, out, gates, cs, i_hat, rstd_i, h_hat,
                       rstd_h, c_hat, rstd_c):
    """Steps t0 .. t1-1 of the LayerNorm LSTM from the states h, c (B, H)
    (those of step t0-1; left as those of step t1-1).  out (T, B, H); the
    rest have ``ring`` rows of steps (gates and i_hat, h_hat (ring, B, 4H);
    cs and c_hat (ring, B, H); rstd_* (ring, B))."""
    B, H = h.shape
    ring = gates.shape[0]
    input_norms(x2d, W_ih, eps, t0, t1, B, ring, i_hat, rstd_i)
    for t in range(t0, t1):
        s = t % ring
        np.dot(h, W_hh.T, h_hat[s])  # the recurrent products, normalised row by row below
        for b in range(B):
            if t >= lengths[b]:  # frozen: states kept, output zero
                for j in range(4 * H):
                    gates[s, b, j] = 0
                for j in range(H):
                    cs[s, b, j] = c[b, j]
                    c_hat[s, b, j] = 0
                    out[t, b, j] = 0
                rstd_h[s, b] = 0
                rstd_c[s, b] = 0
                continue
            rstd_h[s, b] = normalise_row(h_hat[s, b], eps)
            for j in range(H):
                i = sigmoid(i_hat[s, b, j] * gamma_i[j] + beta_i[j]
                            + h_hat[s, b, j] * gamma_h[j] + beta_h[j])
                q = H + j
                f = sigmoid(i_hat[s, b, q] * gamma_i[q] + beta_i[q]
                            + h_hat[s, b, q] * gamma_h[q] + beta_h[q])
                q = 2 * H + j
                g = fast_tanh(i_hat[s, b, q] * gamma_i[q] + beta_i[q]
                              + h_hat[s, b, q] * gamma_h[q] + beta_h[q])
                q = 3 * H + j
                o = sigmoid(i_hat[s, b, q] * gamma_i[q] + beta_i[q]
                            + h_hat[s, b, q] * gamma_h[q] + beta_h[q])
                gates[s, b, j] = i
                gates[s, b, H + j] = f
                gates[s, b, 2 * H + j] = g
                gates[s, b, 3 * H + j] = o
                c_hat[s, b, j] = f * c[b, j] + i * g  # normalised below
            rstd_c[s, b] = normalise_row(c_hat[s, b], eps)
            for j in range(H):
                cj = c_hat[s, b, j] * gamma_c[j] + beta_c[j]
                hj = gates[s, b, 3 * H + j] * fast_tanh(cj)
                c[b, j] = cj
                cs[s, b, j] = cj
                h[b, j] = hj
                out[t, b, j] = hj


@jit
def lstm_backward_steps(W_hh, gamma_h, gamma_c, c0, out, cs, gates, h_hat, rstd_h, c_hat,
                        rstd_c, d_out, lengths, t0, t1, dh, dc, da, dah, work, dp, dgamma_h,
                        dbeta_h, dgamma_c, dbeta_c):
    """Steps t1-1 down to t0 of the LayerNorm LSTM's BPTT from dh, dc =
    dL/dh, dL/dc of step t1-1 (left as those of step t0-1): each step's da
    (the gradient of the gates' pre-activations, (T, B, 4H)) and dah (that
    of the recurrent product, before its LayerNorm), zero past a length;
    adds the steps' shares of the gradients of gamma_h, beta_h, gamma_c and
    beta_c.  work (B, H), dp (H,)."""
    T, B, H = out.shape
    one = out.dtype.type(1)
    for t in range(t1 - 1, t0 - 1, -1):
        for b in range(B):
            if t >= lengths[b]:  # frozen: dh, dc pass through
                for j in range(4 * H):
                    da[t, b, j] = 0
                    dah[t, b, j] = 0
                continue
            # dc_t, then through LN_c into dp = dL/d(f * c_{t-1} + i * g)
            for j in range(H):
                o = gates[t, b, 3 * H + j]
                tc = fast_tanh(cs[t, b, j])
                dhj = dh[b, j] + d_out[t, b, j]
                da[t, b, 3 * H + j] = dhj * tc * o * (one - o)
                dcj = dc[b, j] + dhj * o * (one - tc * tc)
                dc[b, j] = dcj
                dgamma_c[j] += dcj * c_hat[t, b, j]
                dbeta_c[j] += dcj
            norm_backward_row(dc[b], gamma_c, c_hat[t, b], rstd_c[t, b], dp)
            for j in range(H):
                i = gates[t, b, j]
                f = gates[t, b, H + j]
                g = gates[t, b, 2 * H + j]
                c_prev = cs[t - 1, b, j] if t > 0 else c0[b, j]
                da[t, b, j] = dp[j] * g * i * (one - i)
                da[t, b, H + j] = dp[j] * c_prev * f * (one - f)
                da[t, b, 2 * H + j] = dp[j] * i * (one - g * g)
                dc[b, j] = dp[j] * f  # dL/dc_{t-1}
            for q in range(4 * H):
                dgamma_h[q] += da[t, b, q] * h_hat[t, b, q]
                dbeta_h[q] += da[t, b, q]
            norm_backward_row(da[t, b], gamma_h, h_hat[t, b], rstd_h[t, b], dah[t, b])
        # dh_{t-1} = dah_t W_hh
        np.dot(dah[t], W_hh, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = work[b, j]


@jit
def gru_forward_steps(x2d, W_ih, W_hh, gamma_i, beta_i, gamma_h, beta_h, lengths, eps, t0, t1,
                      h, out, gates, hn, i_hat, rstd_i, h_hat, rstd_h):
    """Steps t0 .. t1-1 of the LayerNorm GRU from h (B, H) (left as step
    t1-1's).  out (T, B, H); gates, i_hat, h_hat (ring, B, 3H), hn (ring, B,
    H) (the normalised recurrent n block, what r multiplies), rstd_* (ring, B)."""
    B, H = h.shape
    ring = gates.shape[0]
    one = h.dtype.type(1)
    input_norms(x2d, W_ih, eps, t0, t1, B, ring, i_hat, rstd_i)
    for t in range(t0, t1):
        s = t % ring
        np.dot(h, W_hh.T, h_hat[s])
        for b in range(B):
            if t >= lengths[b]:
                for j in range(3 * H):
                    gates[s, b, j] = 0
                for j in range(H):
                    hn[s, b, j] = 0
                    out[t, b, j] = 0
                rstd_h[s, b] = 0
                continue
            rstd_h[s, b] = normalise_row(h_hat[s, b], eps)
            for j in range(H):
                q = 2 * H + j
                r = sigmoid(i_hat[s, b, j] * gamma_i[j] + beta_i[j]
                            + h_hat[s, b, j] * gamma_h[j] + beta_h[j])
                z = sigmoid(i_hat[s, b, H + j] * gamma_i[H + j] + beta_i[H + j]
                            + h_hat[s, b, H + j] * gamma_h[H + j] + beta_h[H + j])
                hnj = h_hat[s, b, q] * gamma_h[q] + beta_h[q]
                n = fast_tanh(i_hat[s, b, q] * gamma_i[q] + beta_i[q] + r * hnj)
                hj = (one - z) * n + z * h[b, j]
                gates[s, b, j] = r
                gates[s, b, H + j] = z
                gates[s, b, q] = n
                hn[s, b, j] = hnj
                h[b, j] = hj
                out[t, b, j] = hj


@jit
def gru_backward_steps(W_hh, gamma_h, h0, out, gates, hn, h_hat, rstd_h, d_out, lengths, t0, t1,
                       dh, da, dah, work, dgamma_h, dbeta_h):
    """Steps t1-1 down to t0 of the LayerNorm GRU's BPTT from dh (left as
    step t0-1's): da (T, B, 3H) the gradient of the input LayerNorm's output
    (r, z, n blocks), dah that of the recurrent product before its LayerNorm;
    adds the steps' shares of the gradients of gamma_h and beta_h."""
    T, B, H = out.shape
    one = out.dtype.type(1)
    for t in range(t1 - 1, t0 - 1, -1):
        for b in range(B):
            if t >= lengths[b]:
                for j in range(3 * H):
                    da[t, b, j] = 0
                    dah[t, b, j] = 0
                continue
            for j in range(H):
                r = gates[t, b, j]
                z = gates[t, b, H + j]
                n = gates[t, b, 2 * H + j]
                h_prev = out[t - 1, b, j] if t > 0 else h0[b, j]
                dhj = dh[b, j] + d_out[t, b, j]
                da_n = dhj * (one - z) * (one - n * n)
                da[t, b, j] = da_n * hn[t, b, j] * r * (one - r)
                da[t, b, H + j] = dhj * (h_prev - n) * z * (one - z)
                da[t, b, 2 * H + j] = da_n
                dh[b, j] = dhj * z  # the direct path; the product's share is added below
            # The recurrent LayerNorm's output gradient: da, but r * da_n in the n block.
            for j in range(H):
                work[b, j] = da[t, b, 2 * H + j]
                da[t, b, 2 * H + j] = work[b, j] * gates[t, b, j]
            for q in range(3 * H):
                dgamma_h[q] += da[t, b, q] * h_hat[t, b, q]
                dbeta_h[q] += da[t, b, q]
            norm_backward_row(da[t, b], gamma_h, h_hat[t, b], rstd_h[t, b], dah[t, b])
            for j in range(H):
                da[t, b, 2 * H + j] = work[b, j]
        np.dot(dah[t], W_hh, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] += work[b, j]


@jit
def after_the_loop(x2d, W_ih, h0, out, gamma_i, i_hat, rstd_i, da, dah, dx2d, dW_ih, dW_hh,
                   dgamma_i, dbeta_i):
    """Everything of BPTT that is not sequential, over all T*B rows: the
    input LayerNorm's gain and bias gradients (sums of da * i_hat and of
    da), da through that LayerNorm (in place), then dW_ih, dx and dW_hh,
    one product each."""
    T, B, GH = da.shape
    H = out.shape[2]
    R = T * B
    D = da.reshape(R, GH)
    Ihat = i_hat.reshape(R, GH)
    rstd = rstd_i.reshape(R)
    for j in range(GH):
        dgamma_i[j] = 0
        dbeta_i[j] = 0
    for r in range(R):
        for j in range(GH):
            dgamma_i[j] += D[r, j] * Ihat[r, j]
            dbeta_i[j] += D[r, j]
    for r in range(R):  # (a frozen row's da is zero, and so is its gradient)
        norm_backward_row(D[r], gamma_i, Ihat[r], rstd[r], D[r])
    np.dot(D.T, x2d, dW_ih)
    np.dot(D, W_ih, dx2d)
    DAH = dah.reshape(R, GH)
    np.dot(dah[0].T, h0, dW_hh)
    if T > 1:
        dW_hh += np.dot(DAH[B:].T, out.reshape(R, H)[:(T - 1) * B])
