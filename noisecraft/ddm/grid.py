"""The full Ratcliff model's likelihood from a grid of decision times: its cost hardly grows with the trials.

In one cell (condition) and for one response, the full model's density at a response time t is

    f(t) = (1/st0) int_{max(0, d - st0)}^{d} g(s) ds,        d = t - t0,                 (1)

where g(s) is the decision-time density with the drift mixed over N(v, sv^2) in closed form and the
start point averaged over w ~ U(z +- sz/2) (Ratcliff & Tuerlinckx 2002; fast-dm, Voss & Voss 2007).
PyDDM gets its speed by solving for the whole RT distribution once per parameter vector (Shinn, Lam &
Murray 2020); this module does the same with the series. log g is evaluated only at the nodes of a
grid over [s_min, s_max] (s_max the slowest RT of the cell and response), the start-point average by
Gauss-Legendre in the log domain. Between the nodes of a panel (Gauss-Lobatto) log g is M(s)/s with M the
polynomial through s log g: exact for the -c/s with which log g leaves 0, nearly exact for the straight
line of the exponential tail. Interpolating log g, not g, keeps every density positive and its relative
error small far below the mode. exp(log g) is integrated over whole panels by Gauss-Legendre; over the
part of a panel that a window covers by the exact integral of the polynomial through exp(log g) at the
same points where log g bends little, else by Gauss-Legendre on that part. (1) then costs two partial
panels per trial.

Everything is a fixed, smooth function of the node values of log g, so the partials of (1) with respect
to v, a, z, sv and sz follow from the node values' partials (Navarro & Fuss 2009 series, differentiated
term by term in :func:`~noisecraft.ddm.density.logpdf_and_grad`) by the chain rule, accumulated per
panel (the adjoint of the interpolation): no per-trial work per parameter. The partials with respect to
t0 and st0 are the rules differentiated at the window's ends, so an optimiser sees the exact gradient of
the function it minimises.

That still costs two partial panels per trial and evaluation. In a group with many trials, f itself is
evaluated by (1) only at the nodes of fixed panels over the group's response times, and log f at a trial is
interpolated from them with weights fixed by the data (:class:`_RTLayer`, equation (2)): a sparse product per
evaluation. Only trials near t0 or t0 + st0, where f is not smooth enough for the polynomial, take (1) directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from noisecraft.ddm.density import _gl, logpdf_and_grad

__all__ = ["DecisionGrid"]

#: channels of the node arrays after log g: its partials with respect to these parameters
CHANNELS = ("v", "a", "z", "sv", "sz")
#: a panel where log g varies by less than this over its quadrature points integrates exp(log g) through one
#: polynomial (relative error below 1e-9 for n_quad = 8); elsewhere each partial panel by its own Gauss-Legendre rule
_GENTLE = 1.0


def lobatto(p: int) -> np.ndarray:
    """The p Gauss-Lobatto points on [-1, 1]: the ends and the roots of P'_{p-1} (Abramowitz & Stegun 25.4.32)."""
    inner = np.polynomial.legendre.Legendre.basis(p - 1).deriv().roots()
    return np.concatenate([[-1.0], np.sort(inner.real), [1.0]])


def _powers(x: np.ndarray, m: int) -> np.ndarray:
    """x^0 .. x^(m - 1) stacked on a new last axis, by repeated products (built power-major: contiguous rows)."""
    out = np.empty((m, *x.shape))
    out[0] = 1.0
    for k in range(1, m):
        np.multiply(out[k - 1], x, out=out[k])
    return np.moveaxis(out, 0, -1)


@functools.cache
def lagrange_monomials(order: int) -> np.ndarray:
    """The Lagrange basis of the ``order`` Gauss-Lobatto points as monomials in xi: its values at xi are
    _powers(xi, order) @ lagrange_monomials(order) (the inverse Vandermonde matrix; read-only, shared)."""
    inv = np.linalg.inv(np.vander(lobatto(order), order, increasing=True))
    inv.flags.writeable = False
    return inv


def lobatto_nodes(edges: np.ndarray, order: int) -> np.ndarray:
    """The distinct nodes of panels with these edges (one row of edges per group), ``order`` Gauss-Lobatto points
    each with the ends shared by neighbours, left to right: (groups, panels (order - 1) + 1)."""
    xi = lobatto(order)
    inner = edges[:, :-1, None] + np.diff(edges, axis=1)[:, :, None] * (xi[None, None, 1:-1] + 1.0) / 2.0
    return np.concatenate([np.concatenate([edges[:, :-1, None], inner], axis=2).reshape(edges.shape[0], -1),
                           edges[:, -1:]], axis=1)


def panel_node_index(n_panels: int, order: int) -> np.ndarray:
    """Where each panel's ``order`` nodes sit among the distinct nodes of :func:`lobatto_nodes`: (panels, order)."""
    return (order - 1) * np.arange(n_panels)[:, None] + np.arange(order)[None, :]


class DecisionGrid:
    """Panels over the decision times of each (cell, response) group of a data set, and (1) on them.

    Panel edges are s_min + (s_max - s_min) (j / n_panels)^power: narrow near 0, where log g bends most,
    wide in the tail, where it is nearly linear. Each panel carries ``order`` Lobatto nodes (ends shared
    with its neighbours) and ``n_quad`` Gauss-Legendre nodes for its integrals. ``n_z`` Gauss-Legendre
    nodes average over the start point when sz > 0. Below s_min (10 microseconds) g is taken as 0.

    Groups with at least ``layer_min`` distinct rows (default: twice the nodes of ``rt_panels`` panels) also get
    panels over their response times (:class:`_RTLayer`): most of their trials then take f from (1) at those
    panels' nodes, so the cost per evaluation stops growing with the trials.
    """

    def __init__(self, rt: np.ndarray, upper: np.ndarray, cond: np.ndarray, n_cells: int, *,
                 n_panels: int = 32, order: int = 6, n_quad: int = 8, power: float = 3.0, n_z: int = 8,
                 s_min: float = 1e-5, count: np.ndarray | None = None, rt_panels: int = 48,
                 gaps: tuple[float, float] = (4.0, 2.0), layer_min: int | None = None):
        self.rt = np.asarray(rt, dtype=float)
        self.count = np.ones(self.rt.size) if count is None else np.asarray(count, dtype=float)  # trials per row
        self.order, self.n_panels, self.power, self.n_z, self.s_min = order, n_panels, power, n_z, s_min
        self.n_quad = n_quad
        self.n_cells = n_cells
        group = 2 * np.asarray(cond) + np.asarray(upper, dtype=int)
        present = np.flatnonzero(np.bincount(group, minlength=2 * n_cells))
        self.cell, self.upper = present // 2, (present % 2).astype(bool)
        self.group = np.searchsorted(present, group)  # each trial's group index
        self.trial_cell = self.cell[self.group]
        self.s_max = np.full(present.size, 2.0 * s_min)
        np.maximum.at(self.s_max, self.group, self.rt * (1.0 + 1e-9))
        x = np.arange(n_panels + 1) / n_panels
        self.edges = s_min + (self.s_max[:, None] - s_min) * x[None, :] ** power  # (groups, panels + 1)
        self.width = np.diff(self.edges, axis=1)
        self.points = lobatto_nodes(self.edges, order)  # the distinct nodes of each group, left to right
        self.panel_nodes = panel_node_index(n_panels, order)
        self.node_s = self.points[:, self.panel_nodes]  # (groups, panels, order)
        # Lagrange basis of a panel's nodes as monomials in xi: values at xi are _powers(xi) @ inv_vander
        self.inv_vander = lagrange_monomials(order)
        self.xq, self.wq = np.polynomial.legendre.leggauss(n_quad)
        # Lagrange basis of the quadrature points (values at xi: _powers(xi) @ inv_vander_q) and its integrals from
        # -1 (values: _powers(xi, n_quad + 1) @ anti_q): exp(L) between them, where log g bends little
        self.inv_vander_q = np.linalg.inv(np.vander(self.xq, n_quad, increasing=True))
        k = np.arange(n_quad)
        self.anti_q = np.zeros((n_quad + 1, n_quad))
        self.anti_q[1:] = self.inv_vander_q / (k + 1)[:, None]
        self.anti_q[0] = -((-1.0) ** (k + 1) / (k + 1)) @ self.inv_vander_q
        s_q = self.edges[:, :-1, None] + self.width[:, :, None] * (self.xq + 1.0) / 2.0
        # the interpolation weights of log g at each panel's quadrature points: (groups, panels, n_quad, order)
        self._panel_weights = self.wq * (self.width / 2.0)[..., None]  # Gauss-Legendre weights in s, per panel
        self.basis_q = (_powers(self.xq, order) @ self.inv_vander)[None, None] * (
            self.node_s[:, :, None, :] / s_q[..., None])
        # groups with at least twice as many distinct rows as an RT grid has nodes take (2) (:class:`_RTLayer`)
        size = np.bincount(self.group, minlength=present.size)
        big = np.flatnonzero(size >= (2 * (rt_panels * (order - 1) + 1) if layer_min is None else layer_min))
        layered, edges = _rt_edges(self.rt, self.group, big, rt_panels)
        self.layer = None if layered.size == 0 else _RTLayer(self.rt, self.group, self.cell, layered, edges, order,
                                                             gaps, 2.0 * s_min)

    def node_values(self, vals: dict[str, np.ndarray], s: float, eps: float) -> np.ndarray:
        """log g and its partials at every node, panel by panel: (1 + len(CHANNELS), groups, panels, order).

        g(s) = sum_k wz_k f_sv(s | w_k) over Gauss-Legendre nodes w_k = z + sz/2 x_k (one node when sz = 0).
        """
        cell = self.cell
        use_sz = bool(np.any(vals["sz"][cell] > 0))
        xz, wz = _gl(self.n_z) if use_sz else (np.zeros(1), np.ones(1))
        shape = (xz.size, *self.points.shape)
        per = lambda x: np.broadcast_to(x[None, :, None], shape).ravel()
        w = vals["z"][cell][None, :] + vals["sz"][cell][None, :] / 2.0 * xz[:, None]
        t = np.broadcast_to(self.points[None], shape).ravel()
        ll, grads = logpdf_and_grad(t, per(self.upper), per(vals["v"][cell]), per(vals["a"][cell]),
                                    np.broadcast_to(w[:, :, None], shape).ravel(), np.zeros(t.size),
                                    per(vals["sv"][cell]), s=s, eps=eps)
        lw = ll.reshape(shape) + np.log(wz)[:, None, None]
        out = np.empty((1 + len(CHANNELS), *self.points.shape))
        top = lw.max(axis=0)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            r = np.exp(lw - top)
            total = r.sum(axis=0)
            out[0] = np.log(total) + top  # log sum_k exp(lw_k)
        r /= np.where(total > 0, total, 1.0)  # each start point's share of g
        for i, p in enumerate(CHANNELS, start=1):
            d = grads["z" if p == "sz" else p].reshape(shape) * r
            out[i] = np.einsum("kgn,k->gn", d, xz / 2.0) if p == "sz" else d.sum(axis=0)
        return out[:, :, self.panel_nodes]

    def _locate(self, s: np.ndarray, grp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Panel index and local coordinate xi in [-1, 1] of decision times s of rows in groups grp."""
        x = ((np.clip(s, self.s_min, self.s_max[grp]) - self.s_min) / (self.s_max[grp] - self.s_min)) ** (1.0 / self.power)
        j = np.minimum((x * self.n_panels).astype(int), self.n_panels - 1)
        xi = 2.0 * (s - self.edges[grp, j]) / self.width[grp, j] - 1.0
        return j, np.clip(xi, -1.0, 1.0)

    def _log_g_at(self, L_nodes: np.ndarray, s_nodes: np.ndarray, left: np.ndarray, xi: np.ndarray,
                  half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """L = log g at xi, dL/ds there and L's interpolation weights at xi (on the panel's node values).

        L(s) = M(s) / s with M the polynomial through s_k L_k: exact for the -c/s with which log g leaves 0.
        """
        coef = (s_nodes * L_nodes) @ self.inv_vander.T  # (n, order) monomial coefficients of M in xi
        px = _powers(xi, self.order)
        s_x = left + (xi + 1.0) * half
        b = (px @ self.inv_vander) * (s_nodes / s_x[:, None])
        L = np.einsum("nk,nk->n", px, coef) / s_x
        dM = np.einsum("nk,nk->n", px[:, :-1], coef[:, 1:] * np.arange(1, self.order)) / half
        return L, (dM - L) / s_x, b

    def _partial_gl(self, L_nodes: np.ndarray, s_nodes: np.ndarray, left: np.ndarray, xi: np.ndarray,
                    half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P = int from the panel's left end to xi of exp(L) ds per trial by Gauss-Legendre on [-1, xi] (where log g
        bends too much for one polynomial through exp(L)), with its exact derivatives: its weights on the panel's
        node values of L (the adjoint) and dP/ds (the rule differentiated, so that an optimiser sees one function)."""
        scale = (xi + 1.0) / 2.0
        y = -1.0 + (self.xq[:, None] + 1.0) * scale[None, :]  # (n_quad, n): quadrature points on [-1, xi]
        s_y = left[None, :] + (y + 1.0) * half[None, :]
        coef = self.inv_vander @ (s_nodes * L_nodes).T  # (order, n) monomial coefficients of M in xi
        M_y, dM_y = np.empty_like(y), np.empty_like(y)
        M_y[:] = coef[-1]
        dM_y[:] = (self.order - 1) * coef[-1]
        for k in range(self.order - 2, -1, -1):  # Horner, for M and dM/dxi
            M_y *= y
            M_y += coef[k]
            if k:
                dM_y *= y
                dM_y += k * coef[k]
        L_y = M_y / s_y
        e0 = np.exp(L_y) * self.wq[:, None] * half[None, :]
        dL_y = (dM_y - L_y * half[None, :]) / s_y  # dL/dxi at the quadrature points
        dP_ds = (e0 * (0.5 + scale[None, :] * dL_y * (self.xq[:, None] + 1.0) / 2.0)).sum(axis=0) / half
        e = e0 * scale[None, :]
        q, y_k = e / s_y, np.ones_like(y)
        moments = np.empty((self.order, y.shape[1]))  # sum_m e_m y_m^k / s_m
        for k in range(self.order):
            moments[k] = (q * y_k).sum(axis=0)
            y_k *= y
        return e.sum(axis=0), (self.inv_vander.T @ moments).T * s_nodes, dP_ds

    def _partial_poly(self, E: np.ndarray, xi: np.ndarray, half: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P = int from the panel's left end to xi of the polynomial through exp(L) at the panel's quadrature points
        (E, per trial), exact; its weights on E and dP/ds. At xi = 1 it is the panel's Gauss-Legendre sum, as the
        other rule's is, so P stays continuous where a window's end crosses between panels of either kind."""
        pw = _powers(xi, self.n_quad + 1)
        psi = (pw @ self.anti_q) * half[:, None]
        return np.einsum("nm,nm->n", psi, E), psi, np.einsum("nm,nm->n", pw[:, :-1] @ self.inv_vander_q, E)

    def _whole_panels(self, L_nodes: np.ndarray):
        """Per panel: exp(L) at its quadrature points E, whether one polynomial through E integrates it (log g varies
        by less than _GENTLE), and the sums of its integral I_q (Gauss-Legendre) over the panels before q and from q
        on."""
        Lq = np.einsum("gpmk,gpk->gpm", self.basis_q, L_nodes)
        E = np.exp(Lq)
        I = (E * self._panel_weights).sum(axis=-1)
        gentle = (Lq.max(axis=-1) - Lq.min(axis=-1) < _GENTLE).ravel()
        return E, gentle, np.cumsum(I, axis=1) - I, I[:, ::-1].cumsum(axis=1)[:, ::-1]

    def _ends(self, L_nodes: np.ndarray, E: np.ndarray, gentle: np.ndarray, slot: np.ndarray, xi: np.ndarray,
              skip: np.ndarray):
        """The partial panels from their left ends to window ends (panel slot, coordinate xi): P, dP/ds, and the
        rows taking each rule with their adjoint weights (on E for the polynomial rule, on L's nodes for
        Gauss-Legendre). Ends marked ``skip`` (pinned at s_min) keep P = 0."""
        half = (self.width / 2.0).ravel()[slot]
        part, dpart = np.zeros(slot.size), np.zeros(slot.size)
        poly = gentle[slot]
        i_poly, i_gl = np.flatnonzero(poly & ~skip), np.flatnonzero(~poly & ~skip)
        part[i_poly], psi, dpart[i_poly] = self._partial_poly(E.reshape(-1, self.n_quad)[slot[i_poly]], xi[i_poly],
                                                              half[i_poly])
        at = self._panel_rows(L_nodes, slot, xi, half)
        part[i_gl], adj_gl, dpart[i_gl] = self._partial_gl(*at(i_gl))
        return part, dpart, (i_poly, psi), (i_gl, adj_gl), at

    def _panel_rows(self, L_nodes: np.ndarray, slot: np.ndarray, xi: np.ndarray, half: np.ndarray):
        """A function of row indices giving (L's node values, node positions, left edge, xi, half-width) per row."""
        L_flat, s_flat = L_nodes.reshape(-1, self.order), self.node_s.reshape(-1, self.order)
        left = self.edges[:, :-1].ravel()
        return lambda idx: (L_flat[slot[idx]], s_flat[slot[idx]], left[slot[idx]], xi[idx], half[idx])

    def loglik_grad(self, vals: dict[str, np.ndarray], lapse_p, lapse_density, *, s: float = 1.0,
                    eps: float = 1e-10, grad: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-row log density (1) mixed with a lapse, log((1 - p) f + p c), and the per-cell sums of its partials
        (each row weighted by its ``count``).

        ``vals`` holds per-cell values of v, a, z, t0, sv, sz, st0; ``lapse_p`` and ``lapse_density`` (c)
        are per trial. The partials come back summed over each cell's trials (keys v, a, z, t0, sv, sz, st0,
        lapse); with ``grad=False`` none are formed (an empty dict).
        """
        nodes = self.node_values(vals, s, eps)
        panels = self._whole_panels(nodes[0])
        n, cell = self.rt.size, self.trial_cell
        layer = self.layer
        if layer is None:  # every row by its own window
            rows = self._forward(vals, nodes, panels, self.rt, self.group)
            log_f, live = rows.log_f, rows.live
        else:  # trials in panels of the RT grid away from t0 and t0 + st0 by (2), the others by their windows
            far, far_nodes = layer.far(vals["t0"][layer.cell], vals["st0"][layer.cell])
            near = np.flatnonzero(~far)
            at_rt = np.concatenate([self.rt[near], layer.tau[far_nodes]])
            rows = self._forward(vals, nodes, panels, at_rt, np.concatenate([self.group[near], layer.group[far_nodes]]))
            log_f, live = layer.interpolate(rows, near, far_nodes, far)
        p = np.broadcast_to(np.asarray(lapse_p, dtype=float), (n,))
        c = np.broadcast_to(np.asarray(lapse_density, dtype=float), (n,))
        if np.any(p > 0):
            with np.errstate(divide="ignore", invalid="ignore"):
                ll = np.logaddexp(np.log1p(-p) + log_f, np.log(p * c))
                r = np.where(live, np.exp(np.log1p(-p) + log_f - ll), 0.0)  # d ll / d log f
        else:  # no lapse: the same values, without the mixing's passes
            ll, r = log_f, live.astype(float)
        if not grad:
            return ll, {}
        r = r * self.count  # each row stands for count trials in the sums below
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            dlapse = np.where(np.isfinite(ll), np.exp(np.log(c) - ll) - np.where(live, np.exp(log_f - ll), 0.0), 0.0)
        dlapse *= self.count
        lapse = {"lapse": np.bincount(cell, weights=dlapse, minlength=self.n_cells)}
        if layer is None:
            return ll, {**self._backward(nodes, panels[0], rows, r), **lapse}
        node_w = layer.adjoint(np.where(far, r, 0.0), far_nodes)
        return ll, {**self._backward(nodes, panels[0], rows, np.concatenate([r[near], node_w])), **lapse}

    def _forward(self, vals: dict[str, np.ndarray], nodes: np.ndarray, panels, rt: np.ndarray, grp: np.ndarray
                 ) -> _Rows:
        """log f (1) at response times rt of rows in groups grp, and what the adjoint needs (:meth:`_backward`)."""
        E, gentle, prefix, suffix = panels
        P, n = self.n_panels, rt.size
        cell = self.cell[grp]
        t0, st0 = vals["t0"][cell], vals["st0"][cell]
        d = rt - t0
        live = d > self.s_min
        lo = np.maximum(d - st0, self.s_min)
        j_hi, xi_hi = self._locate(np.maximum(d, self.s_min), grp)
        j_lo, xi_lo = self._locate(lo, grp)
        # both ends of every window at once (a window cut at s_min has nothing below its lower end)
        slot = np.concatenate([grp * P + j_hi, grp * P + j_lo])
        part, dpart, by_poly, by_gl, at = self._ends(nodes[0], E, gentle, slot, np.concatenate([xi_hi, xi_lo]),
                                                     np.concatenate([np.zeros(n, bool), lo <= self.s_min]))
        # (1): the panels wholly inside the window, past the median mass from the suffix sums (small there), and
        # the partial panels at both ends
        median = np.minimum((prefix > suffix).argmax(axis=1), P - 1)
        tail = j_lo >= median[grp]
        # whole = sums[plus] - sums[minus] over [prefix sums, suffix sums]: suffix[lo] - suffix[hi] in the tail
        n_slots = prefix.size
        plus = np.where(tail, n_slots + slot[n:], slot[:n])
        minus = np.where(tail, n_slots + slot[:n], slot[n:])
        sums = np.concatenate([prefix.ravel(), suffix.ravel()])
        whole = sums[plus] - sums[minus]
        plain = st0 <= 1e-9
        span = np.where(plain, 1.0, st0)
        mass = whole + part[:n] - part[n:]
        live &= plain | (mass > 1e-300)  # (a window whose mass underflows: -inf, the likelihood at an absurd point)
        mass = np.where(live & ~plain, mass, 1.0)
        i_plain = np.flatnonzero(plain)  # st0 = 0: f = g(d), log g interpolated at d
        L_hi, dL_hi = np.zeros(n), np.zeros(n)
        b_plain = np.zeros((0, self.order))
        if i_plain.size:
            L_hi[i_plain], dL_hi[i_plain], b_plain = self._log_g_at(*at(i_plain))
        with np.errstate(divide="ignore"):
            log_f = np.where(live, np.where(plain, L_hi, np.log(mass) - np.log(span)), -np.inf)
        dP_hi, dP_lo = dpart[:n], np.where(lo > self.s_min, dpart[n:], 0.0)
        return _Rows(log_f, live, cell, slot, (plus, minus), mass, plain, span, dL_hi, dP_hi, dP_lo, by_poly, by_gl,
                     (i_plain, b_plain))

    def _backward(self, nodes: np.ndarray, E: np.ndarray, rows: _Rows, r: np.ndarray) -> dict[str, np.ndarray]:
        """Per cell, sum over rows of r * d log f / d theta (theta: v, a, z, t0, sv, sz, st0): the adjoint of
        :meth:`_forward` with row weights r (d ll / d log f, counts included; 0 where a row is not live)."""
        live, plain, mass, span, dL_hi = rows.live, rows.plain, rows.mass, rows.span, rows.dL_hi
        cell_sum = lambda x: np.bincount(rows.cell, weights=np.where(live, x, 0.0), minlength=self.n_cells)
        grads = {"t0": cell_sum(r * np.where(plain, -dL_hi, -(rows.dP_hi - rows.dP_lo) / mass)),
                 "st0": cell_sum(r * np.where(plain, -0.5 * dL_hi, rows.dP_lo / mass - 1.0 / span))}
        omega = np.where(live & ~plain, r / mass, 0.0)  # d ll / d mass
        i_plain, b_plain = rows.plain_rows
        return {**grads, **self._channel_sums(nodes, E, rows.slot, rows.whole_at, omega, rows.by_poly, rows.by_gl,
                                              (i_plain, r[i_plain, None] * b_plain), rows.cell)}

    def _channel_sums(self, nodes: np.ndarray, E: np.ndarray, slot: np.ndarray, whole_at: tuple[np.ndarray, np.ndarray],
                      omega: np.ndarray, by_poly, by_gl, plain_rows, cell: np.ndarray) -> dict[str, np.ndarray]:
        """Per cell, the sum over its trials of d ll / d theta for theta in CHANNELS (the chain rule through L's node
        values, whose partials are nodes[1:]).

        The partial panels' parts are gathered as weights on each panel's node values of L (the adjoint); the whole
        panels' parts J_q = int_q g dL/dtheta per trial, from prefix or suffix sums like the mass itself (the weights
        of very unlikely trials are huge: a running sum of them over panels would swamp the others).
        """
        C, n_g, P, K, M = nodes.shape[0], nodes.shape[1], self.n_panels, self.order, self.n_quad
        dn = nodes[1:]  # (C - 1, groups, panels, order)
        beta = np.einsum("gpm,gpmk->gpk", E * self._panel_weights, self.basis_q)  # I_q's weights on L's nodes
        J = np.einsum("gpk,cgpk->cgp", beta, dn)
        J_sums = np.concatenate([(np.cumsum(J, axis=2) - J).reshape(C - 1, -1),
                                 J[:, :, ::-1].cumsum(axis=2)[:, :, ::-1].reshape(C - 1, -1)], axis=1)
        plus, minus = whole_at  # as the mass: prefix sums, or suffix sums in the tail
        whole_J = J_sums[:, plus] - J_sums[:, minus]
        sign = np.concatenate([omega, -omega])  # d ll / d P at each end
        scatter = lambda rows, w: np.bincount((rows[:, None] * w.shape[1] + np.arange(w.shape[1])).ravel(),
                                              weights=w.ravel(), minlength=n_g * P * w.shape[1]
                                              ).astype(float).reshape(n_g * P, -1)  # (float also when rows is empty)
        (i_poly, psi), (i_gl, adj_gl), (i_plain, w_plain) = by_poly, by_gl, plain_rows
        W = scatter(slot[i_gl], sign[i_gl, None] * adj_gl) + scatter(slot[i_plain], w_plain)  # on L's node values
        W_E = scatter(slot[i_poly], sign[i_poly, None] * psi)  # on exp(L) at the quadrature points
        W += np.einsum("im,im,imk->ik", W_E, E.reshape(-1, M), self.basis_q.reshape(-1, M, K))
        per_group = np.einsum("cik,ik->ci", dn.reshape(C - 1, n_g * P, K), W).reshape(C - 1, n_g, P).sum(-1)
        per_trial = omega * whole_J  # (C - 1, n)
        return {name: np.bincount(self.cell, weights=per_group[i], minlength=self.n_cells)
                + np.bincount(cell, weights=per_trial[i], minlength=self.n_cells) for i, name in enumerate(CHANNELS)}


def _rt_edges(rt: np.ndarray, group: np.ndarray, candidates: np.ndarray, n_panels: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Panel edges at the quantiles of each candidate group's RTs, for the groups where no panel is empty (distinct
    RTs): (those groups, edges (groups, n_panels + 1))."""
    x = np.arange(n_panels + 1) / n_panels
    edges = np.array([np.quantile(rt[group == g], x) for g in candidates]).reshape(-1, n_panels + 1)
    ok = np.all(np.diff(edges, axis=1) > 1e-9 * np.maximum(1.0, np.abs(edges[:, 1:])), axis=1)
    return candidates[ok], edges[ok]


@dataclass
class _Rows:
    """One forward pass of (1) over rows (:meth:`DecisionGrid._forward`): log f and what its adjoint needs."""

    log_f: np.ndarray
    live: np.ndarray
    cell: np.ndarray
    slot: np.ndarray
    whole_at: tuple
    mass: np.ndarray
    plain: np.ndarray
    span: np.ndarray
    dL_hi: np.ndarray
    dP_hi: np.ndarray
    dP_lo: np.ndarray
    by_poly: tuple
    by_gl: tuple
    plain_rows: tuple


class _RTLayer:
    """Panels over the response times of each large (cell, response) group, and log f interpolated from their nodes.

    In a group, the density f(t) of (1) is smooth in the response time t except near t = t0, where log f leaves
    -inf as -c / (t - t0), and near t = t0 + st0, where the window's lower end leaves 0. Its values at the Lobatto
    nodes t_k of fixed panels over the group's RTs (edges at quantiles of the RTs: narrow where trials are dense)
    give it at every trial i in a panel away from both points by the polynomial through log f(t_k):

        log f(t_i) = sum_k W_ik log f(t_k),                                                             (2)

    W (Lagrange weights) depends on the data alone, so a trial costs one row of a sparse product per evaluation,
    and its partials one row of the transposed product. Trials in panels closer to t0 than ``gaps[0]`` panel widths,
    or to t0 + st0 than ``gaps[1]``, take (1) directly; (2) then agrees with (1) to about 5e-7 (random models with
    and without sv; interpolating (t - t0) log f instead, exact for the -c / (t - t0) near t0, gained nothing
    measurable that far from t0).
    """

    def __init__(self, rt: np.ndarray, group: np.ndarray, cell: np.ndarray, layered: np.ndarray, edges: np.ndarray,
                 order: int, gaps: tuple[float, float], s_floor: float):
        P = edges.shape[1] - 1
        self.cell = cell[layered]  # each layered group's cell
        width = np.diff(edges, axis=1)
        points = lobatto_nodes(edges, order)
        n_nodes = points.shape[1]
        self.tau = points.ravel()  # the nodes t_k of every layered group, group after group
        self.group = np.repeat(layered, n_nodes)  # their group (of the decision-time grid)
        self.left, self.width = edges[:, :-1], width
        self.panel_nodes = np.arange(layered.size)[:, None, None] * n_nodes + panel_node_index(P, order)[None]
        rank = np.full(cell.size, -1)
        rank[layered] = np.arange(layered.size)
        rows = np.flatnonzero(rank[group] >= 0)
        k = rank[group[rows]]  # each layered trial's layered group
        j = np.empty(rows.size, dtype=int)  # and its panel there
        for i in range(layered.size):
            at = k == i
            j[at] = np.clip(np.searchsorted(edges[i], rt[rows[at]], side="right") - 1, 0, P - 1)
        self.W = _interpolation_matrix(rt, rows, edges[k, j], width[k, j], self.panel_nodes[k, j], self.tau.size)
        self.WT = self.W.T.tocsr()
        self.trial_panel = np.full(rt.size, -1)
        self.trial_panel[rows] = k * P + j
        self.gaps, self.s_floor = gaps, s_floor

    def far(self, t0: np.ndarray, st0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Trials that take (2) at per-layered-group t0 and st0, and the nodes t_k they need (indices into tau)."""
        s_left, st0 = self.left - t0[:, None], st0[:, None]
        gap_st0 = np.maximum(s_left - st0, st0 - s_left - self.width)  # from the panel to t0 + st0
        ok = ((s_left >= self.gaps[0] * self.width) & (s_left > self.s_floor)
              & ((st0 <= 1e-9) | (gap_st0 >= self.gaps[1] * self.width)))
        need = np.zeros(self.tau.size, dtype=bool)
        need[self.panel_nodes[ok].ravel()] = True
        far = (self.trial_panel >= 0) & ok.ravel()[np.maximum(self.trial_panel, 0)]
        return far, np.flatnonzero(need)

    def interpolate(self, rows: _Rows, near: np.ndarray, far_nodes: np.ndarray, far: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Per trial log f and live from the forward pass over [near trials, far_nodes]: near ones as computed, far
        ones by (2) (-inf where a node of their panel underflows)."""
        m = near.size
        log_f, live = np.full(far.size, -np.inf), np.zeros(far.size, dtype=bool)
        log_f[near], live[near] = rows.log_f[:m], rows.live[:m]
        L, bad = np.zeros(self.tau.size), np.zeros(self.tau.size)
        finite = np.isfinite(rows.log_f[m:])
        L[far_nodes] = np.where(finite, rows.log_f[m:], 0.0)
        bad[far_nodes] = ~finite
        ok = far if finite.all() else far & ((self.W @ bad) == 0.0)
        log_f[ok], live[ok] = (self.W @ L)[ok], True
        return log_f, live

    def adjoint(self, r: np.ndarray, far_nodes: np.ndarray) -> np.ndarray:
        """The adjoint of (2): d ll / d log f(t_k) at the far nodes from per-trial r = d ll / d log f (0 where a
        trial is not live or is near)."""
        return (self.WT @ r)[far_nodes]


def _interpolation_matrix(rt: np.ndarray, rows: np.ndarray, left: np.ndarray, width: np.ndarray,
                          columns: np.ndarray, n_nodes: int) -> csr_matrix:
    """W of (2): row i (for i in ``rows``, panel [left, left + width] with its nodes at ``columns``) holds the Lagrange
    weights of those Gauss-Lobatto nodes at rt[i]; other rows are empty. (len(rt), n_nodes), CSR."""
    order = columns.shape[1]
    xi = np.clip(2.0 * (rt[rows] - left) / width - 1.0, -1.0, 1.0)
    weights = _powers(xi, order) @ lagrange_monomials(order)
    indptr = np.zeros(rt.size + 1, dtype=np.int64)
    indptr[rows + 1] = order
    return csr_matrix((weights.ravel(), columns.ravel(), np.cumsum(indptr)), shape=(rt.size, n_nodes))
