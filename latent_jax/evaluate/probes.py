"""Linear probes of a split latent code (paper 002, Sec. 4.3's claim that z_s carries the
identity and z_u the rest), for every method that declares `code_split` (`encode` and
`relevant_code_mask`: Lr-LiVAE's z_s / z_u, CSVAE's w / z, IFcVAEGAN's y_hat / z, cVAE's
one-hot / z).

- `probe_accuracy(train_x, train_y, test_x, test_y)`: test accuracy of a multinomial logistic
  regression (L2-regularised, fitted with scipy's L-BFGS on standardised features) of the class
  from the features.
- `probe_r2(train_x, train_t, test_x, test_t)`: per target column, the test R^2 of a ridge
  regression from the features (1 - residual / total sum of squares around the *training*
  mean; 0 is what a constant predicts, negative is worse).
- `disentanglement_probes(codes_train, codes_test, mask, ...)`: both, from the label-relevant
  part of the code and from the label-irrelevant part, with the chance level and the majority
  rate next to them.

"Linear" means a linear map of the code, fitted on one set of images and scored on another;
a low figure therefore says the information is not linearly readable, not that it is absent.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    mu = train.mean(axis=0)
    sd = train.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return (train - mu) / sd, (test - mu) / sd


def probe_accuracy(train_x, train_y, test_x, test_y, *, l2: float = 1e-3,
                   max_iter: int = 500) -> float:
    """Test accuracy of a multinomial logistic regression of `y` (int classes) from `x`.

    The objective is the mean cross-entropy plus `l2 / 2 * ||W||^2` (the biases are not
    penalised); classes absent from the training set are never predicted.
    """
    from scipy import optimize  # pylint: disable=import-outside-toplevel

    train_y = np.asarray(train_y, np.int64).ravel()
    test_y = np.asarray(test_y, np.int64).ravel()
    if len(train_y) == 0 or len(test_y) == 0:
        return float("nan")
    classes = np.unique(train_y)
    xtr, xte = _standardise(np.reshape(train_x, (len(train_y), -1)),
                            np.reshape(test_x, (len(test_y), -1)))
    if len(classes) == 1:
        return float(np.mean(test_y == classes[0]))
    index = np.searchsorted(classes, train_y)
    n, d = xtr.shape
    k = len(classes)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), index] = 1.0
    xb = np.concatenate([xtr, np.ones((n, 1))], axis=1)

    def objective(theta):
        w = theta.reshape(d + 1, k)
        logits = xb @ w
        logits -= logits.max(axis=1, keepdims=True)
        logz = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        logp = logits - logz
        loss = -np.sum(onehot * logp) / n + 0.5 * l2 * np.sum(w[:d] ** 2)
        grad = xb.T @ (np.exp(logp) - onehot) / n
        grad[:d] += l2 * w[:d]
        return loss, grad.ravel()

    res = optimize.minimize(objective, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B",
                            options=dict(maxiter=int(max_iter)))
    w = res.x.reshape(d + 1, k)
    pred = classes[np.argmax(np.concatenate([xte, np.ones((len(xte), 1))], axis=1) @ w, axis=1)]
    return float(np.mean(pred == test_y))


def probe_r2(train_x, train_t, test_x, test_t, *, ridge: float = 1e-3) -> np.ndarray:
    """Per column of `t`, the test R^2 of a ridge regression of `t` from `x` ([n_targets])."""
    train_t = np.asarray(train_t, np.float64)
    test_t = np.asarray(test_t, np.float64)
    if train_t.ndim == 1:
        train_t, test_t = train_t[:, None], test_t[:, None]
    xtr, xte = _standardise(np.reshape(train_x, (len(train_t), -1)),
                            np.reshape(test_x, (len(test_t), -1)))
    n, d = xtr.shape
    mean = train_t.mean(axis=0)
    a = xtr.T @ xtr + ridge * n * np.eye(d)
    w = np.linalg.solve(a, xtr.T @ (train_t - mean))
    pred = xte @ w + mean
    ss_res = np.sum((test_t - pred) ** 2, axis=0)
    ss_tot = np.sum((test_t - mean) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def disentanglement_probes(codes_train: np.ndarray, codes_test: np.ndarray,
                           relevant: np.ndarray, *, classes_train: np.ndarray,
                           classes_test: np.ndarray, factors_train: np.ndarray | None = None,
                           factors_test: np.ndarray | None = None,
                           factor_names: Sequence[str] = ()) -> dict:
    """Probes from the label-relevant code (`codes[:, relevant]`) and from the rest.

    Returns `{'class_accuracy': {'relevant', 'irrelevant'}, 'chance', 'majority',
    'factor_r2': {name: {'relevant', 'irrelevant'}}, 'mean_factor_r2': {...}, 'n_train',
    'n_test', 'dims': {'relevant', 'irrelevant'}}`.
    """
    relevant = np.asarray(relevant, bool)
    parts = {"relevant": relevant, "irrelevant": ~relevant}
    out: dict = {"n_train": int(len(codes_train)), "n_test": int(len(codes_test)),
                 "dims": {k: int(m.sum()) for k, m in parts.items()}}
    classes_train = np.asarray(classes_train, np.int64)
    classes_test = np.asarray(classes_test, np.int64)
    out["class_accuracy"] = {
        k: (probe_accuracy(codes_train[:, m], classes_train, codes_test[:, m], classes_test)
            if m.any() else float("nan")) for k, m in parts.items()}
    counts = np.bincount(classes_train)
    out["chance"] = 1.0 / max(1, int(np.sum(counts > 0)))
    out["majority"] = float(np.mean(classes_test == np.argmax(counts)))
    if factors_train is not None and len(factor_names):
        r2 = {k: (probe_r2(codes_train[:, m], factors_train, codes_test[:, m], factors_test)
                  if m.any() else np.full(len(factor_names), np.nan)) for k, m in parts.items()}
        out["factor_r2"] = {name: {k: float(r2[k][j]) for k in parts}
                            for j, name in enumerate(factor_names)}
        out["mean_factor_r2"] = {k: float(np.nanmean(r2[k])) for k in parts}
    return out


def format_probes(result: Mapping) -> str:
    """A markdown summary of `disentanglement_probes`' result."""
    ca = result["class_accuracy"]
    lines = [f"class accuracy of a linear probe: from the relevant code "
             f"{ca['relevant']:.3f}, from the irrelevant code {ca['irrelevant']:.3f} "
             f"(chance {result['chance']:.3f}, majority {result['majority']:.3f}; "
             f"{result['n_train']} / {result['n_test']} images)"]
    if "factor_r2" in result:
        m = result["mean_factor_r2"]
        lines.append(f"mean R^2 of the nuisance factors: from the irrelevant code "
                     f"{m['irrelevant']:.3f}, from the relevant code {m['relevant']:.3f}")
        lines.append("")
        lines.append("| factor | R^2 from irrelevant | R^2 from relevant |")
        lines.append("|---|---|---|")
        for name, v in result["factor_r2"].items():
            lines.append(f"| {name} | {v['irrelevant']:.3f} | {v['relevant']:.3f} |")
    return "\n".join(lines)
