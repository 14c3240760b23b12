"""An independent NumPy forward of an MoE layer, from moe.h's definitions (float64), for the
tests: it shares no code with the C library or its scalar reference."""

import math

import numpy as np

_erf = np.vectorize(math.erf)


def _gelu(v):
    return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))


def _silu(v):
    return v / (1.0 + np.exp(-v))


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _ffn(cfg, x, gate, up, down, gb=None, ub=None, db=None):
    act = cfg.get("activation", "swiglu")
    u = x @ up.T + (ub if ub is not None else 0.0)
    if act in ("swiglu", "geglu", "swiglu_oai"):
        g = x @ gate.T + (gb if gb is not None else 0.0)
        if act == "swiglu":
            h = _silu(g) * u
        elif act == "geglu":
            h = _gelu(g) * u
        else:
            limit = cfg.get("swiglu_limit") or 7.0
            alpha = cfg.get("swiglu_alpha") or 1.702
            g = np.minimum(g, limit)
            u = np.clip(u, -limit, limit)
            h = g * _sigmoid(alpha * g) * (u + 1.0)
    elif act == "relu":
        h = np.maximum(u, 0.0)
    else:
        h = _gelu(u)
    return h @ down.T + (db if db is not None else 0.0)


def forward(cfg, w, x):
    """(y, topk_ids, topk_weights, expert_counts, dropped, aux_loss, z_loss) for x [T, d_model]."""
    f64 = {k: np.asarray(v, np.float64) for k, v in w.items()}
    x = np.asarray(x, np.float64)
    T, E, k = x.shape[0], cfg["n_experts"], cfg["top_k"]
    logits = x @ f64["router"].T
    if cfg.get("router_has_bias"):
        logits = logits + f64["router_bias"]
    if cfg.get("score_func", "softmax") == "sigmoid":
        scores = _sigmoid(logits)
    else:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = e / e.sum(axis=1, keepdims=True)
    choose = scores + (f64["router_bias"] if cfg.get("has_selection_bias") else 0.0)
    G = cfg.get("n_group", 0)
    if G and G > 1:
        per = choose.reshape(T, G, E // G)
        if cfg.get("group_score", "top2_sum") == "max":
            gs = per.max(axis=2)
        else:
            gs = -np.sort(-per, axis=2)[:, :, :2].sum(axis=2)
        keep = np.argsort(-gs, axis=1, kind="stable")[:, : cfg["topk_group"]]
        mask = np.zeros((T, G), bool)
        np.put_along_axis(mask, keep, True, axis=1)
        choose = np.where(np.repeat(mask, E // G, axis=1), choose, -np.inf)
    ids = np.argsort(-choose, axis=1, kind="stable")[:, :k]
    wts = np.take_along_axis(scores, ids, axis=1)
    if cfg.get("renormalize"):
        wts = wts / (wts.sum(axis=1, keepdims=True) + 1e-20)
    wts = wts * (cfg.get("routed_scaling_factor") or 1.0)
    counts = np.bincount(ids.ravel(), minlength=E)
    cap = cfg.get("expert_capacity", 0)
    kept = np.ones((T, k), bool)
    if cap:
        used = np.zeros(E, np.int64)
        for t in range(T):
            for s in range(k):
                e_ = ids[t, s]
                kept[t, s] = used[e_] < cap
                used[e_] += 1
    y = np.zeros_like(x)
    for t in range(T):
        for s in range(k):
            e_ = ids[t, s]
            if kept[t, s]:
                bias = cfg.get("expert_has_bias")
                out = _ffn(cfg, x[t], f64.get("gate", [None] * E)[e_] if "gate" in f64 else None,
                           f64["up"][e_], f64["down"][e_],
                           f64["gate_bias"][e_] if bias and "gate_bias" in f64 else None,
                           f64["up_bias"][e_] if bias else None, f64["down_bias"][e_] if bias else None)
                y[t] += wts[t, s] * out
            elif cfg.get("drop_policy", "zero") == "passthrough":
                y[t] += wts[t, s] * x[t]
    if cfg.get("d_ff_shared"):
        sh = _ffn(cfg, x, f64.get("shared_gate"), f64["shared_up"], f64["shared_down"])
        if cfg.get("shared_expert_gate"):
            sh = sh * _sigmoid(x @ f64["shared_expert_gate"])[:, None]
        y += sh
    p = scores / scores.sum(axis=1, keepdims=True)
    aux = E * float(np.sum(counts / (T * k) * p.mean(axis=0)))
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    z = float(np.mean(lse ** 2))
    return y, ids, wts, counts, int((~kept).sum()), aux, z
