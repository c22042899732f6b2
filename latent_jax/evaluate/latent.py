"""Per-label latent codes: class-conditional Wasserstein distances, edit locality, and PNG figures
drawn with numpy and PIL (no plotting library).

- `wasserstein_1d(a, b)`: the exact 1-Wasserstein distance between two empirical 1-D
  distributions, the integral of |F_a - F_b| over the merged sample points.
- `latent_code_metrics(codes, labels, names)`: for each binary label, W1 between the codes of the
  examples with y = 0 and y = 1 (CCVAE reproduction report, Figure 10); for each categorical label,
  per-class means and standard deviations, the smallest and mean W1 over pairs of classes, and the
  nearest-class-mean accuracy of the 1-D code (does the latent separate the classes?).
- `edit_locality(edited, reference, region)`: the share of an edit's pixel change
  (|edited - reference| summed over channels) that falls inside the edited attribute's region,
  per image, next to the share of the image the region covers (what a change spread evenly over
  the image would score). Only visible change counts: a pixel value that moves by less than
  half an 8-bit level (`INVISIBLE`) is no change, and an image without visible change is left
  out (an edit that changes nothing has no locality; before this threshold, float rounding in
  a no-op edit's pixels scored a locality made of noise, which differed between device counts).
- `bar_chart_png`, `histograms_png`: the figures.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw


def wasserstein_1d(a, b) -> float:
    """W1 between two empirical 1-D distributions (scipy.stats.wasserstein_distance); NaN when
    either is empty (a class absent from the evaluation set)."""
    from scipy import stats

    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(stats.wasserstein_distance(a, b))


def latent_code_metrics(codes: np.ndarray, labels: np.ndarray, names: Sequence[str],
                        categorical: Sequence[bool]) -> dict:
    codes = np.asarray(codes, np.float64)
    labels = np.asarray(labels)
    binary, multi = {}, {}
    for i, (name, cat) in enumerate(zip(names, categorical)):
        c, y = codes[:, i], np.round(labels[:, i]).astype(int)
        if not cat:
            binary[name] = {"wasserstein": wasserstein_1d(c[y == 0], c[y == 1]),
                            "mean_0": float(np.mean(c[y == 0])) if np.any(y == 0) else None,
                            "mean_1": float(np.mean(c[y == 1])) if np.any(y == 1) else None,
                            "n_0": int(np.sum(y == 0)), "n_1": int(np.sum(y == 1))}
            continue
        classes = sorted(set(y.tolist()))
        means = {k: float(np.mean(c[y == k])) for k in classes}
        stds = {k: float(np.std(c[y == k])) for k in classes}
        pairs = [wasserstein_1d(c[y == p], c[y == q]) for ip, p in enumerate(classes)
                 for q in classes[ip + 1:]]
        centres = np.array([means[k] for k in classes])
        nearest = np.array(classes)[np.argmin(np.abs(c[:, None] - centres[None]), axis=1)]
        multi[name] = {"classes": classes, "counts": {k: int(np.sum(y == k)) for k in classes},
                       "class_means": means, "class_stds": stds,
                       "pairwise_wasserstein_min": float(min(pairs)) if pairs else None,
                       "pairwise_wasserstein_mean": float(np.mean(pairs)) if pairs else None,
                       "nearest_mean_accuracy": float(np.mean(nearest == y)),
                       "majority_rate": float(max(np.mean(y == k) for k in classes))}
    out = {"binary": binary, "categorical": multi}
    ws = [v["wasserstein"] for v in binary.values() if np.isfinite(v["wasserstein"])]
    out["mean_wasserstein"] = float(np.mean(ws)) if ws else float("nan")
    return out


INVISIBLE = 0.5 / 255     # half an 8-bit level, images in [0, 1]


def edit_locality(edited: np.ndarray, reference: np.ndarray, region: np.ndarray) -> dict:
    """edited, reference: [N, H, W, C] in [0, 1]; region: bool [N, H, W]."""
    diff = np.abs(np.asarray(edited, np.float64) - np.asarray(reference, np.float64))
    change = np.where(diff >= INVISIBLE, diff, 0.0).sum(-1)
    total = change.sum(axis=(1, 2))
    inside = (change * region).sum(axis=(1, 2))
    ok = total > 0
    share = np.asarray(region, np.float64).mean(axis=(1, 2))
    loc = float(np.mean(inside[ok] / total[ok])) if ok.any() else float("nan")
    area = float(np.mean(share)) if share.size else float("nan")
    return {"locality": loc, "region_share": area,
            "locality_over_share": loc / area if area > 0 and np.isfinite(loc) else float("nan"),
            "n_changed": int(ok.sum())}


# --------------------------------------------------------------------------------- figures
_BG, _FG, _GRID = (255, 255, 255), (30, 30, 30), (225, 225, 225)
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _save(img, path) -> None:
    """PNG through etils.epath (local or gs:// paths)."""
    from etils import epath

    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        img.save(f, format="PNG")


def bar_chart_png(values: Mapping[str, float], path: str, title: str = "",
                  series: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Vertical bars per name; with `series` (series -> name -> value) grouped bars."""
    if series is None:
        series = {"": dict(values)}
    names = list(next(iter(series.values())).keys())
    n_s = len(series)
    vmax = max([v for s in series.values() for v in s.values() if np.isfinite(v)] + [1e-6])
    bar_w, gap, left, bottom, top = 10, 8, 50, 110, 40
    width = left + len(names) * (n_s * bar_w + gap) + 20 + 120
    height = 360
    img = Image.new("RGB", (width, height), _BG)
    d = ImageDraw.Draw(img)
    plot_h = height - bottom - top
    for k in range(5):
        yv = vmax * k / 4
        yp = height - bottom - int(plot_h * k / 4)
        d.line([(left, yp), (width - 130, yp)], fill=_GRID)
        d.text((4, yp - 6), f"{yv:.2f}", fill=_FG)
    for j, name in enumerate(names):
        x0 = left + j * (n_s * bar_w + gap) + gap // 2
        for s, (sname, vals) in enumerate(series.items()):
            v = vals.get(name, float("nan"))
            if np.isfinite(v):
                h = int(plot_h * v / vmax)
                d.rectangle([x0 + s * bar_w, height - bottom - h,
                             x0 + (s + 1) * bar_w - 1, height - bottom],
                            fill=_PALETTE[s % len(_PALETTE)])
        label = Image.new("RGB", (bottom - 6, 12), _BG)
        ImageDraw.Draw(label).text((0, 0), name[:17], fill=_FG)
        label = label.rotate(90, expand=True)
        img.paste(label, (x0 + max(0, (n_s * bar_w - 12) // 2), height - bottom + 4))
    d.line([(left, height - bottom), (width - 130, height - bottom)], fill=_FG)
    if title:
        d.text((left, 10), title, fill=_FG)
    if len(series) > 1 or next(iter(series)):
        for s, sname in enumerate(series):
            y = top + 14 * s
            d.rectangle([width - 120, y, width - 110, y + 9], fill=_PALETTE[s % len(_PALETTE)])
            d.text((width - 105, y - 2), sname, fill=_FG)
    _save(img, path)


def histograms_png(codes: np.ndarray, labels: np.ndarray, names: Sequence[str], path: str,
                   bins: int = 24, class_names: Mapping[str, Sequence[str]] | None = None) -> None:
    """One panel per label: histograms of its 1-D code, one colour per class (Figures 5-6)."""
    codes = np.asarray(codes, np.float64)
    labels = np.round(np.asarray(labels)).astype(int)
    cols = 4
    rows = -(-len(names) // cols)
    pw, ph = 220, 130
    img = Image.new("RGB", (cols * pw, rows * ph), _BG)
    d = ImageDraw.Draw(img)
    for i, name in enumerate(names):
        ox, oy = (i % cols) * pw, (i // cols) * ph
        c, y = codes[:, i], labels[:, i]
        lo, hi = np.percentile(c, 0.5), np.percentile(c, 99.5)
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        classes = sorted(set(y.tolist()))
        hists = {k: np.histogram(c[y == k], edges)[0] / max(1, np.sum(y == k)) for k in classes}
        hmax = max(h.max() for h in hists.values()) or 1.0
        x0, y0, w, h = ox + 10, oy + 20, pw - 20, ph - 40
        for k in classes:
            col = _PALETTE[k % len(_PALETTE)]
            pts = [(x0 + int(w * (b + 0.5) / bins), y0 + h - int(h * v / hmax))
                   for b, v in enumerate(hists[k])]
            d.line(pts, fill=col, width=2)
        d.line([(x0, y0 + h), (x0 + w, y0 + h)], fill=_FG)
        d.text((ox + 10, oy + 4), name, fill=_FG)
        d.text((x0, y0 + h + 3), f"{lo:.1f}", fill=_FG)
        d.text((x0 + w - 24, y0 + h + 3), f"{hi:.1f}", fill=_FG)
        legend = (class_names or {}).get(name) or [str(k) for k in classes]
        for j, k in enumerate(classes):
            d.text((ox + pw - 60, oy + 4 + 10 * j), str(legend[k] if k < len(legend) else k)[:8],
                   fill=_PALETTE[k % len(_PALETTE)])
    _save(img, path)
