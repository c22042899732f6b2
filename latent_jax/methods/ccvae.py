"""CCVAE and its semi-supervised baselines M2 and (adapted) DIVA (paper 004: Pilchen, Cahill,
Barberteguy, a reproduction report of Joy et al., "Capturing Label Characteristics in VAEs",
ICLR 2021, with appendix derivations and a multi-class extension).

One player, `model` (every network of the method), with one Adam (the reference: lr 1e-4,
batch 200). Batches may carry `labeled` (bool [B], docs/contracts.md); rows with
`labeled=False` get the unsupervised bound, the others the supervised one (no key: all
supervised). Binary labels are 0/1, a categorical label (e.g. `Hair_MULTI`) its class index.

CCVAE (`ccvae`; report Sec. 3.1, Eq. 2-3; Joy et al. Eq. 4-5):
- z = (z_c, z_not_c): `model.label_dims` coordinates of z_c per label, `model.free_dims` free
  ones. q(z|x) diagonal Gaussian from the reference's conv encoder; p(x|z) = Laplace(x_hat, 1)
  summed over pixels; p(z_not_c) = N(0, I).
- q(y|z_c) = prod_i q(y_i|z_c^i): per binary label one logit w_i . z_i + b_i (the reference's
  elementwise layer), per categorical label a linear layer to its C logits (report App. C.1).
- p(z_c|y) = prod_i N(loc_i[y_i], scale_i[y_i]): a learned location and scale per label value;
  scale = softplus(raw) + 1e-3 (the floor keeps log p finite), raw initialised so that the
  scale starts at 1.001 (a unit prior; ccvae_pytorch starts at softplus(1) = 1.313); locations
  initialised at -2 / +2 for binary labels, as the Pyro repository does (ccvae_pytorch starts
  them at 0), so that the two classes' regions are apart before any training.
- p(y) = prod_i p(y_i) with the label frequencies of the supervised training set.
- Supervised bound: L(x, y) = E_q(z|x)[ w (log p(x|z) + log p(z|y) - log q(z|x) - log q(y|z_c)) ]
  + log q(y|x) + log p(y), with w = q(y|z_c) / q(y|x) and
  q(y|x) ~ (1/K) sum_k q(y|z_c^(k)), z^(k) ~ q(z|x), K = `loss.num_classifier_samples` (100).
  The expectations over z use one reparameterised sample. Inside the weighted term the z_c part
  log p(z_c|y) - log q(z_c|x) is that one-sample estimate (`loss.weighted_kl='sampled'`): w
  depends on z_c, so replacing it by -KL(q(z_c|x) || p(z_c|y)) (`'analytic'`) changes the bound
  and leaves the classifier without any signal about which label is right (log q(y|x) and
  -E[w log q(y|z_c)] then cancel for a narrow q(z_c|x)); the z_not_c part is the analytic KL. As in the reference code, the
  q(y|z_c) inside w sees z_c with its gradient to the encoder stopped (the classifier and
  q(y|x) keep theirs).
- Unsupervised bound: L(x) = E_q(z|x) q(y|z_c)[ log p(x|z) + log p(z|y) + log p(y)
  - log q(z|x) - log q(y|z_c) ]. Every term but the reconstruction factorises over labels, so
  each label is handled on its own: a binary label's y_i is *sampled* from q(y_i|z_c^i), not
  reparameterised and without a score-function term, as in the reference. Then the expected
  gradient of -log q(y|z_c) is zero (E_q[grad log q] = grad sum_y q = 0): in expectation
  unlabelled rows teach the classifier nothing (one sample adds zero-mean noise) and reach z_c
  only through log p(z_c|y) at the sampled y;
  a categorical label is *enumerated*, sum_c q(c|z_c^i) [log p(c) - log q(c|z_c^i) - KL_i(c)]
  (the maintainers' advice for multi-class labels).
- Interventions (`edit`): z_c^i <- z_c^i + strength (loc_i[target] - z_c^i); strength 1 sets
  it to the target class's prior mean ("the other class's prior region"); `intervene` sets it to
  any chosen value. Conditional generation (`sample`): z_c ~ p(z_c|y), z_not_c ~ N(0, I).
  Latent walks (`latent_walk`, `latent_walk_pair`) go from loc_i[0] to loc_i[1] of *each* label
  (the reference's 1-D walk used the last label's limits for every label).
- Classification: q(y|z_c) at the posterior mean of z_c; for a categorical label the column of
  `classify` holds the predicted class index (binary labels: logits).

Adapted DIVA (`diva`; report App. A.3): the same networks with z = (z_y, z_x), z_y partitioned
per label, p(z_y|y) the same conditional prior and q_w(y|z_y) the same factorised classifier used
as DIVA's *auxiliary* classifier. Supervised: log p(x|z) - KL(q(z_x|x)||p(z_x))
- KL(q(z_y|x)||p(z_y|y)) + alpha_y log q_w(y|z_y) (+ log p(y), a constant); unsupervised as
CCVAE's (the report's A.3 unsupervised bound is term for term CCVAE's unsupervised bound).
One encoder gives both z_y and z_x (the report's q_phi_y, q_phi_x are separate networks); the
domain latent z_d is removed, as in the adaptation.

M2 (`m2`; Kingma et al. 2014, report App. A.1): q(z|x, y) with location mu(y, x) (y
concatenated to the conv trunk's features, one joint layer) and scale sigma(x) (the trunk's
features alone), q(y|x) (a second conv trunk with a linear head), p(x|y, z) (the decoder fed
[z, y]), p(z) = N(0, I), p(y) the supervised frequencies. Supervised: L(x, y) + alpha log q(y|x).
Unsupervised: sum_y q(y|x) L(x, y) + H(q(y|x)). Deviation: with 16 binary labels the sum has
2^16 terms, so the reconstruction and KL terms use one sample y ~ q(y|x) with a straight-through
gradient (hard sample forward, probabilities backward); the label terms
sum_y q(y|x) (log p(y) - log q(y|x)) are exact (they factorise over labels). Edits switch the
label input (predicted labels elsewhere); M2 has no per-label latent (no `label_codes`).

Deviations from the reference code, also in docs/methods.md: the encoder's scale and the
conditional prior's scale are softplus + 1e-3 (the prior's starting at 1.001); `labeled` rows and unlabeled rows may share a batch (the reference never mixes
them; the pipeline does not either); categorical prior locations start evenly spaced in [-2, 2].
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from latent_jax.data import labels as labels_lib
from latent_jax.data import pipeline as data_pipeline
from latent_jax.methods import base
from latent_jax.nets import conv
from latent_jax.errors import ConfigError

sg = jax.lax.stop_gradient


class _Layout:
    """Kinds and class counts of the method's labels."""

    def __init__(self, label_names: Sequence[str], classes: Mapping[str, int] | None = None):
        self.names = tuple(label_names)
        self.categorical = tuple(labels_lib.label_kind(n) == labels_lib.CATEGORICAL
                                 for n in self.names)
        self.num_classes = tuple(labels_lib.num_classes(n, classes) for n in self.names)

    def __len__(self):
        return len(self.names)

    def log_probs(self, logits: list) -> list:
        """Per label, log q(c) for every class c: [..., C_i] (binary: [log(1-p), log p])."""
        out = []
        for l, cat in zip(logits, self.categorical):
            if cat:
                out.append(jax.nn.log_softmax(l, axis=-1))
            else:
                out.append(jnp.stack([jax.nn.log_sigmoid(-l), jax.nn.log_sigmoid(l)], axis=-1))
        return out

    def classes(self, y: jax.Array) -> jax.Array:
        return jnp.round(y).astype(jnp.int32)

    def classify_columns(self, logits: list) -> jax.Array:
        """[B, n_labels]: binary logits, categorical predicted class indices."""
        cols = [jnp.argmax(l, axis=-1).astype(jnp.float32) if cat else l
                for l, cat in zip(logits, self.categorical)]
        return jnp.stack(cols, axis=-1)


def _take(table: jax.Array, c: jax.Array) -> jax.Array:
    """table [..., C] at class c [...]."""
    return jnp.take_along_axis(table, c[..., None], axis=-1)[..., 0]


def _log_prior_tables(config, data_spec, layout: _Layout) -> list[np.ndarray]:
    # The spec carries the run's validated data config; a hand-made spec has none.
    data = data_spec.options if getattr(data_spec, "options", None) is not None else config.data
    freqs = data_pipeline.label_frequencies(data, layout.names)
    return [np.log(np.clip(freqs[n], 1e-6, None)).astype(np.float32) for n in layout.names]


class LatentModel(nn.Module):
    """CCVAE's / DIVA's networks: encoder q(z|x), decoder p(x|z), label classifier q(y|z_c),
    conditional prior p(z_c|y)."""

    image_size: int
    channels: Sequence[int]
    top: int
    num_classes: Sequence[int]
    categorical: Sequence[bool]
    label_dims: int
    free_dims: int

    def setup(self):
        n_c = len(self.num_classes) * self.label_dims
        self.encoder = conv.GaussianEncoder(n_c + self.free_dims, self.channels, self.top)
        self.decoder = conv.ConvDecoder(self.image_size, self.channels, self.top)
        self.classifier = conv.LabelClassifier(self.num_classes, self.categorical,
                                               self.label_dims)
        self.prior = conv.ConditionalPrior(self.num_classes, self.label_dims)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def classify(self, z_c):
        return self.classifier(z_c)

    def prior_tables(self):
        return self.prior()

    def __call__(self, x):
        loc, _ = self.encode(x)
        n_c = len(self.num_classes) * self.label_dims
        return self.decode(loc), self.classify(loc[:, :n_c]), self.prior_tables()


class _OneModelMethod(base.Method):
    """A method whose networks all live in one Flax module, `self.model`, trained by one player
    (`model`) with one optimizer: CCVAE, DIVA and M2."""

    def player_names(self):
        return ("model",)

    def init(self, rng):
        h, w, c = self.image_shape
        return {"model": base.init_player(self.model, self.tx("model"), rng,
                                          jnp.zeros((1, h, w, c), jnp.float32))}

    def _apply(self, params, method, *args):
        return self.model.apply({"params": params}, *args, method=method)


@base.register("ccvae")
class CCVAE(_OneModelMethod):
    """CCVAE; `DIVA` overrides the supervised bound."""

    # The config keys it reads (base.Method.config_keys).
    config_keys = frozenset({
        "edit.strength", "loss.num_classifier_samples", "loss.weighted_kl", "model.channels",
        "model.free_dims", "model.label_dims", "model.top"})


    capabilities = frozenset({base.EDIT, base.SAMPLE, base.CLASSIFY, base.LABEL_CODES, base.WALK,
                              base.INTERVENE})

    def __init__(self, config: ml_collections.ConfigDict, data_spec, steps_per_epoch: int):
        super().__init__(config, data_spec, steps_per_epoch)
        m = config.model
        self.layout = _Layout(self.label_names, self.label_classes)
        self.label_dims = int(m.label_dims)
        self.free_dims = int(m.free_dims)
        if self.label_dims < 1 or self.free_dims < 0:
            raise ConfigError("config.model.label_dims must be >= 1 and config.model.free_dims "
                             ">= 0")
        self.n_c = self.num_labels * self.label_dims
        self.latent_dim = self.n_c + self.free_dims
        conv.check_channels(self.image_shape[0], tuple(m.channels))
        self.model = LatentModel(self.image_shape[0], tuple(m.channels), int(m.top),
                                 self.layout.num_classes, self.layout.categorical,
                                 self.label_dims, self.free_dims)
        self.num_k = int(config.loss.num_classifier_samples)
        self.weighted_kl = str(config.loss.get("weighted_kl", "sampled"))
        if self.weighted_kl not in ("sampled", "analytic"):
            raise ConfigError("config.loss.weighted_kl: 'sampled' or 'analytic', got "
                             f"{self.weighted_kl!r}")
        self.log_py = _log_prior_tables(config, self.data_spec, self.layout)

    # ------------------------------------------------------------------ the bounds
    def label_terms(self, params, loc_c, scale_c, z_c):
        """Per label: log q(c|z_c) [B, C_i], KL(q(z_c^i|x) || p(z_c^i|c)) [B, C_i], log p(c) [C_i]."""
        lq = self.layout.log_probs(self._apply(params, LatentModel.classify, z_c))
        locs, scales = self._apply(params, LatentModel.prior_tables)
        d = self.label_dims
        kls = []
        for i in range(self.num_labels):
            lq_i, ls_i = loc_c[:, i * d:(i + 1) * d], scale_c[:, i * d:(i + 1) * d]
            kls.append(jnp.sum(conv.gaussian_kl(lq_i[:, None, :], ls_i[:, None, :],
                                                locs[i][None], scales[i][None]), axis=-1))
        return lq, kls, [jnp.asarray(t) for t in self.log_py]

    def log_q_y_given_x(self, params, loc_c, scale_c, y, rng):
        """log q(y|x) ~ log (1/K) sum_k q(y|z_c^(k)), z^(k) ~ q(z|x)   [B]."""
        k = self.num_k
        zk = conv.rsample(rng, loc_c, scale_c, (k,))                  # [K, B, n_c]
        b = loc_c.shape[0]
        lq = self.layout.log_probs(self._apply(params, LatentModel.classify,
                                               zk.reshape(k * b, -1)))
        c = self.layout.classes(y)
        per = sum(_take(lq_i.reshape(k, b, -1), jnp.broadcast_to(c[:, i], (k, b)))
                  for i, lq_i in enumerate(lq))                          # [K, B]
        return jax.nn.logsumexp(per, axis=0) - math.log(k)

    def unsupervised_label_terms(self, lq, kls, log_py, rng):
        """sum_i E_q(y_i|z_c)[log p(y_i) - log q(y_i|z_c) - KL_i(y_i)]: sampled for binary labels,
        enumerated for categorical ones   [B]."""
        total = 0.0
        for i, cat in enumerate(self.layout.categorical):
            inner = log_py[i][None, :] - lq[i] - kls[i]                  # [B, C]
            if cat:
                total = total + jnp.sum(jnp.exp(lq[i]) * inner, axis=-1)
            else:
                c = jax.random.categorical(jax.random.fold_in(rng, i), sg(lq[i]), axis=-1)
                total = total + _take(inner, c)
        return total

    def supervised_bound(self, params, parts, y, rng):
        log_px, kl_free, lq, kls, log_py, loc_c, scale_c, z_c = parts
        c = self.layout.classes(y)
        log_qyzc = sum(_take(lq[i], c[:, i]) for i in range(self.num_labels))
        kl_c = sum(_take(kls[i], c[:, i]) for i in range(self.num_labels))
        log_p_y = sum(log_py[i][c[:, i]] for i in range(self.num_labels))
        log_qyx = self.log_q_y_given_x(params, loc_c, scale_c, y, rng)
        # The weight's q(y|z_c) sees z_c without its gradient to the encoder (the reference:
        # "we only want gradients wrt to params of qyz"); the classifier still gets one.
        lq_w = self.layout.log_probs(self._apply(params, LatentModel.classify, sg(z_c)))
        log_qyzc_w = sum(_take(lq_w[i], c[:, i]) for i in range(self.num_labels))
        w = jnp.exp(log_qyzc_w - log_qyx)
        if self.weighted_kl == "sampled":
            # w depends on z_c, so E_q[w (log p(z_c|y) - log q(z_c|x))] is not -E_q[w] KL: the
            # z_c part is the one-sample estimate at the z_c that w sees. (z_not_c is
            # independent of w under q, so its analytic KL is exact.)
            locs, scales = self._apply(params, LatentModel.prior_tables)
            d = self.label_dims
            log_ratio = 0.0
            for i in range(self.num_labels):
                sl = slice(i * d, (i + 1) * d)
                log_ratio = log_ratio + jnp.sum(
                    conv.normal_log_prob(z_c[:, sl], locs[i][c[:, i]], scales[i][c[:, i]])
                    - conv.normal_log_prob(z_c[:, sl], loc_c[:, sl], scale_c[:, sl]), axis=-1)
        else:   # "analytic": -KL(q(z_c|x) || p(z_c|y)) inside the weighted term
            log_ratio = -kl_c
        bound = w * (log_px - kl_free + log_ratio - log_qyzc) + log_qyx + log_p_y
        return bound, {"train/log_q_y_x": log_qyx, "train/weight": w}

    def bounds(self, params, x, y, rng):
        """(supervised bound [B], unsupervised bound [B], extra per-example metrics)."""
        k_z, k_y, k_k = jax.random.split(rng, 3)
        loc, scale = self._apply(params, LatentModel.encode, x)
        z = conv.rsample(k_z, loc, scale)
        x_hat = self._apply(params, LatentModel.decode, z)
        log_px = conv.laplace_log_likelihood(x, x_hat)
        n_c = self.n_c
        kl_free = jnp.sum(conv.gaussian_kl(loc[:, n_c:], scale[:, n_c:], 0.0, 1.0), axis=-1)
        lq, kls, log_py = self.label_terms(params, loc[:, :n_c], scale[:, :n_c], z[:, :n_c])
        parts = (log_px, kl_free, lq, kls, log_py, loc[:, :n_c], scale[:, :n_c], z[:, :n_c])
        sup, extra = self.supervised_bound(params, parts, y, k_k)
        unsup = log_px - kl_free + self.unsupervised_label_terms(lq, kls, log_py, k_y)
        extra = dict(extra, **{"loss/reconstruction_l1": jnp.mean(jnp.abs(x - x_hat),
                                                                    axis=(1, 2, 3)),
                               "loss/kl_free": kl_free})
        c = self.layout.classes(y)
        hits = [(jnp.argmax(lq[i], axis=-1) == c[:, i]).astype(jnp.float32)
                for i in range(self.num_labels)]
        extra["train/accuracy"] = jnp.mean(jnp.stack(hits, -1), axis=-1)
        return sup, unsup, extra

    def train_step(self, states, batch, rng, phase):
        del phase
        st = states["model"]
        x, y = batch["image"], batch["label"]
        labeled = batch.get("labeled")
        if labeled is None:
            labeled = jnp.ones((x.shape[0],), bool)
        lab = labeled.astype(jnp.float32)
        n_lab = jnp.maximum(jnp.sum(lab), 1.0)
        n_unl = jnp.maximum(jnp.sum(1.0 - lab), 1.0)

        def loss_fn(params):
            sup, unsup, extra = self.bounds(params, x, y, rng)
            bound = jnp.where(labeled, sup, unsup)
            loss = -jnp.mean(bound)
            metrics = {"loss/total": loss,
                       "loss/supervised_bound": jnp.sum(jnp.where(labeled, sup, 0.0)) / n_lab,
                       "loss/unsupervised_bound": jnp.sum(jnp.where(labeled, 0.0, unsup)) / n_unl,
                       "train/labeled_fraction": jnp.mean(lab)}
            for k, v in extra.items():
                if k.startswith("train/"):   # label-dependent: labeled rows only
                    metrics[k] = jnp.sum(v * lab) / n_lab
                else:
                    metrics[k] = jnp.mean(v)
            return loss, metrics

        grads, metrics = jax.grad(loss_fn, has_aux=True)(st.params)
        metrics["grad_norm/model"] = base.tree_l2(grads)
        return {"model": base.apply_updates(st, self.tx("model"), grads)}, metrics

    # ------------------------------------------------------------------ capabilities
    def encode(self, states, x):
        loc, _ = self._apply(states["model"].params, LatentModel.encode, x)
        return loc

    def decode(self, states, z):
        return self._apply(states["model"].params, LatentModel.decode, z)

    def prior_tables(self, states):
        """(locs, scales): per label [C_i, label_dims]."""
        return self._apply(states["model"].params, LatentModel.prior_tables)

    def classify(self, states, x):
        z = self.encode(states, x)
        logits = self._apply(states["model"].params, LatentModel.classify, z[:, :self.n_c])
        return self.layout.classify_columns(logits)

    def label_codes(self, states, x):
        """One coordinate per label [B, n_labels]: z_c^i itself with one dim per label; with
        several, its projection on the unit vector from loc_i[0] to loc_i[1]."""
        z = self.encode(states, x)[:, :self.n_c]
        d = self.label_dims
        if d == 1:
            return z
        locs, _ = self.prior_tables(states)
        cols = []
        for i in range(self.num_labels):
            u = locs[i][1] - locs[i][0]
            cols.append(z[:, i * d:(i + 1) * d] @ (u / jnp.linalg.norm(u)))
        return jnp.stack(cols, -1)

    def edit_latent(self, states, z, changes, strength=None):
        """z_c^i <- z_c^i + s (loc_i[target] - z_c^i) for the binary labels with changes != 0."""
        s = float(self.config.edit.strength) if strength is None else strength
        locs, _ = self.prior_tables(states)
        d = self.label_dims
        parts = [z[:, i * d:(i + 1) * d] for i in range(self.num_labels)]
        for i, cat in enumerate(self.layout.categorical):
            if cat:
                continue
            ch = changes[:, i:i + 1]
            target = jnp.where(ch > 0, locs[i][1][None], locs[i][0][None])
            parts[i] = jnp.where(ch != 0, parts[i] + s * (target - parts[i]), parts[i])
        return jnp.concatenate(parts + [z[:, self.n_c:]], axis=-1)

    def edit(self, states, x, changes, strength=None):
        z = self.encode(states, x)
        return self.decode(states, self.edit_latent(states, z, changes.astype(z.dtype),
                                                    strength))

    def intervene(self, states, x, label_index: int, value):
        """Sets z_c of one label to `value` (scalar or [label_dims]) and decodes."""
        z = self.encode(states, x)
        d = self.label_dims
        v = jnp.broadcast_to(jnp.asarray(value, z.dtype), (z.shape[0], d))
        z = z.at[:, label_index * d:(label_index + 1) * d].set(v)
        return self.decode(states, z)

    def walk_values(self, states, label_index: int, num_steps: int, classes=(0, 1)):
        """[num_steps, label_dims]: from loc[classes[0]] to loc[classes[1]] of this label."""
        locs, _ = self.prior_tables(states)
        a, b = locs[label_index][classes[0]], locs[label_index][classes[1]]
        t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
        return a[None] + t * (b - a)[None]

    def latent_walk(self, states, x, label_index: int, num_steps: int = 7, classes=(0, 1)):
        """[num_steps, B, H, W, C]: x with z_c of one label walked between its class means."""
        vals = self.walk_values(states, label_index, num_steps, classes)
        return jnp.stack([self.intervene(states, x, label_index, v) for v in vals])

    def latent_walk_pair(self, states, x, label_a: int, label_b: int, num_steps: int = 5):
        """[num_steps, num_steps, B, H, W, C]: a 2-D walk over two labels, each between its
        own class means."""
        va = self.walk_values(states, label_a, num_steps)
        vb = self.walk_values(states, label_b, num_steps)
        z0 = self.encode(states, x)
        d = self.label_dims
        rows = []
        for a in va:
            row = []
            for b in vb:
                z = z0.at[:, label_a * d:(label_a + 1) * d].set(a)
                z = z.at[:, label_b * d:(label_b + 1) * d].set(b)
                row.append(self.decode(states, z))
            rows.append(jnp.stack(row))
        return jnp.stack(rows)

    def sample(self, states, rng, y):
        locs, scales = self.prior_tables(states)
        c = self.layout.classes(y)
        n = y.shape[0]
        k_c, k_f = jax.random.split(rng)
        parts = []
        for i in range(self.num_labels):
            eps = jax.random.normal(jax.random.fold_in(k_c, i), (n, self.label_dims))
            parts.append(locs[i][c[:, i]] + scales[i][c[:, i]] * eps)
        parts.append(jax.random.normal(k_f, (n, self.free_dims)))
        x = self.decode(states, jnp.concatenate(parts, axis=-1))
        return x, jnp.ones((n,), bool)


@base.register("diva")
class DIVA(CCVAE):
    """Adapted DIVA (report App. A.3): CCVAE's networks with DIVA's supervised bound and
    auxiliary classifier weight `loss.classifier_weight` (alpha_y)."""

    # CCVAE's and the auxiliary classifier's weight.
    config_keys = frozenset({
        "edit.strength", "loss.classifier_weight", "loss.num_classifier_samples",
        "loss.weighted_kl", "model.channels", "model.free_dims", "model.label_dims", "model.top"})

    def __init__(self, config, data_spec, steps_per_epoch):
        super().__init__(config, data_spec, steps_per_epoch)
        self.alpha = float(config.loss.classifier_weight)

    def supervised_bound(self, params, parts, y, rng):
        del rng
        log_px, kl_free, lq, kls, log_py = parts[:5]
        c = self.layout.classes(y)
        log_qyz = sum(_take(lq[i], c[:, i]) for i in range(self.num_labels))
        kl_c = sum(_take(kls[i], c[:, i]) for i in range(self.num_labels))
        log_p_y = sum(log_py[i][c[:, i]] for i in range(self.num_labels))
        bound = log_px - kl_free - kl_c + log_p_y + self.alpha * log_qyz
        return bound, {"train/log_q_y_z": log_qyz}


# ---------------------------------------------------------------------------------- M2
class M2Model(nn.Module):
    """M2's networks: q(z|x, y), q(y|x), p(x|y, z)."""

    image_size: int
    channels: Sequence[int]
    top: int
    latent_dim: int
    label_width: int

    def setup(self):
        self.encoder = conv.GaussianEncoder(self.latent_dim, self.channels, self.top)
        self.classifier = conv.ConvClassifier(self.label_width, self.channels, self.top)
        self.decoder = conv.ConvDecoder(self.image_size, self.channels, self.top)

    def encode(self, x, y_code):
        return self.encoder(x, y_code)

    def classify(self, x):
        return self.classifier(x)

    def decode(self, z, y_code):
        return self.decoder(jnp.concatenate([z, y_code], axis=-1))

    def __call__(self, x):
        y_code = jnp.zeros((x.shape[0], self.label_width), x.dtype)
        loc, _ = self.encode(x, y_code)
        return self.decode(loc, y_code), self.classify(x)


@base.register("m2")
class M2(_OneModelMethod):
    """M2 (Kingma et al. 2014) as derived in the report's App. A.1; see the module docstring."""

    # The config keys it reads (base.Method.config_keys); its edits take no strength.
    config_keys = frozenset({
        "loss.classifier_weight", "model.channels", "model.free_dims", "model.label_dims",
        "model.top"})


    capabilities = frozenset({base.EDIT, base.SAMPLE, base.CLASSIFY})

    def __init__(self, config, data_spec, steps_per_epoch):
        super().__init__(config, data_spec, steps_per_epoch)
        m = config.model
        self.layout = _Layout(self.label_names, self.label_classes)
        # Binary labels take one input/logit each, categorical ones C (one-hot / softmax).
        self.widths = tuple(c if cat else 1 for c, cat in
                            zip(self.layout.num_classes, self.layout.categorical))
        self.label_width = sum(self.widths)
        self.z_dim = int(m.label_dims) * self.num_labels + int(m.free_dims)
        self.latent_dim = self.z_dim + self.label_width
        conv.check_channels(self.image_shape[0], tuple(m.channels))
        self.model = M2Model(self.image_shape[0], tuple(m.channels), int(m.top), self.z_dim,
                             self.label_width)
        self.alpha = float(config.loss.classifier_weight)
        self.log_py = _log_prior_tables(config, self.data_spec, self.layout)

    def _split_logits(self, flat):
        out, at = [], 0
        for w, cat in zip(self.widths, self.layout.categorical):
            out.append(flat[:, at:at + w] if cat else flat[:, at])
            at += w
        return out

    def y_code(self, y):
        """Label rows -> decoder/encoder input: 0/1 for binary labels, one-hot for categorical."""
        c = self.layout.classes(y)
        cols = []
        for i, (w, cat) in enumerate(zip(self.widths, self.layout.categorical)):
            cols.append(jax.nn.one_hot(c[:, i], w) if cat else y[:, i:i + 1].astype(jnp.float32))
        return jnp.concatenate(cols, axis=-1)

    def _elbo_given_code(self, params, x, code, rng):
        loc, scale = self._apply(params, M2Model.encode, x, code)
        z = conv.rsample(rng, loc, scale)
        x_hat = self._apply(params, M2Model.decode, z, code)
        log_px = conv.laplace_log_likelihood(x, x_hat)
        kl = jnp.sum(conv.gaussian_kl(loc, scale, 0.0, 1.0), axis=-1)
        return log_px - kl, x_hat

    def bounds(self, params, x, y, rng):
        k_s, k_u, k_y = jax.random.split(rng, 3)
        lq = self.layout.log_probs(self._split_logits(self._apply(params, M2Model.classify, x)))
        log_py = [jnp.asarray(t) for t in self.log_py]
        c = self.layout.classes(y)
        # Supervised: L(x, y) + log p(y) + alpha log q(y|x).
        elbo_s, x_hat = self._elbo_given_code(params, x, self.y_code(y), k_s)
        log_qyx = sum(_take(lq[i], c[:, i]) for i in range(self.num_labels))
        log_p_y = sum(log_py[i][c[:, i]] for i in range(self.num_labels))
        sup = elbo_s + log_p_y + self.alpha * log_qyx
        # Unsupervised: one straight-through sample y ~ q(y|x) for L(x, y); exact label terms.
        cols, label_terms = [], 0.0
        for i, cat in enumerate(self.layout.categorical):
            probs = jnp.exp(lq[i])
            label_terms = label_terms + jnp.sum(probs * (log_py[i][None] - lq[i]), axis=-1)
            ci = jax.random.categorical(jax.random.fold_in(k_y, i), sg(lq[i]), axis=-1)
            hard = jax.nn.one_hot(ci, probs.shape[-1])
            st = hard + probs - sg(probs)
            cols.append(st if cat else st[:, 1:2])
        elbo_u, _ = self._elbo_given_code(params, x, jnp.concatenate(cols, -1), k_u)
        unsup = elbo_u + label_terms
        hits = [(jnp.argmax(lq[i], axis=-1) == c[:, i]).astype(jnp.float32)
                for i in range(self.num_labels)]
        extra = {"loss/reconstruction_l1": jnp.mean(jnp.abs(x - x_hat), axis=(1, 2, 3)),
                 "train/accuracy": jnp.mean(jnp.stack(hits, -1), axis=-1),
                 "train/log_q_y_x": log_qyx}
        return sup, unsup, extra

    train_step = CCVAE.train_step

    # ------------------------------------------------------------------ capabilities
    def _predicted_code(self, params, x):
        """The label code of q(y|x)'s most probable labels."""
        logits = self._split_logits(self._apply(params, M2Model.classify, x))
        cols = self.layout.classify_columns(logits)
        binary = jnp.asarray([not cat for cat in self.layout.categorical])
        return self.y_code(jnp.where(binary[None], (cols > 0).astype(jnp.float32), cols))

    def encode(self, states, x):
        """(z posterior mean given the predicted labels, the predicted label code) [B, d + L]."""
        params = states["model"].params
        code = self._predicted_code(params, x)
        loc, _ = self._apply(params, M2Model.encode, x, code)
        return jnp.concatenate([loc, code], axis=-1)

    def decode(self, states, z):
        return self._apply(states["model"].params, M2Model.decode, z[:, :self.z_dim],
                           z[:, self.z_dim:])

    def classify(self, states, x):
        logits = self._split_logits(self._apply(states["model"].params, M2Model.classify, x))
        return self.layout.classify_columns(logits)

    def edit(self, states, x, changes, strength=None):
        """Switches the binary label inputs (+1 -> 1, -1 -> 0); strength is not used (M2's
        labels are discrete inputs, not a latent region)."""
        del strength
        z = self.encode(states, x)
        code = z[:, self.z_dim:]
        at = 0
        for i, (w, cat) in enumerate(zip(self.widths, self.layout.categorical)):
            if not cat:
                ch = changes[:, i]
                code = code.at[:, at].set(jnp.where(ch > 0, 1.0, jnp.where(ch < 0, 0.0,
                                                                           code[:, at])))
            at += w
        return self.decode(states, jnp.concatenate([z[:, :self.z_dim], code], axis=-1))

    def sample(self, states, rng, y):
        z = jax.random.normal(rng, (y.shape[0], self.z_dim))
        x = self._apply(states["model"].params, M2Model.decode, z, self.y_code(y))
        return x, jnp.ones((y.shape[0],), bool)
