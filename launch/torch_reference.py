"""PyTorch versions of latent_jax's training steps, for `launch/benchmark.py --compare=torch`.

Written here from the papers and latent_jax's own network descriptions (nets/resnet.py,
nets/conv.py), not from the authors' code: the same layers, shapes, batch and number of forward
and backward passes as the JAX step they are timed against, so that the ratio measures the
frameworks, not the models. Cases:

- `vac` (IntroVAC's phase 0 / VAC): the residual encoder and decoder with BatchNorm, the linear
  classifier, 100 L1 + 10 BCE + 3 KL (means), Adam on every parameter.
- `introvac` phase 1 (the introspective step): the same networks, the encoder/classifier and
  decoder losses with their own Adam updates and the same passes as methods/introvac.py (see
  `_introvac_adversarial`).
- `ccvae` (phase 0): CCVAE's convolutional encoder and decoder, a Laplace likelihood and the KL
  to N(0, I), Adam. The JAX step it is set against (CCVAE's semi-supervised step) also runs the
  factorised label classifier and prior tables, which are a few dot products next to the nets.
- `csvae`: CSVAE's Larsen-style trunk, Gaussian heads for z and w, decoder and label adversary,
  with the encoder/decoder update and the adversary's own update (see `_csvae`).
- `ifcvaegan`: IFcVAEGAN's encoder, decoder, discriminator and auxiliary network, one backward
  pass for every player and one RMSprop step each (see `_ifcvaegan`).
- `lrlivae`: Lr-LiVAE's Algorithm 1, the n_gm GM updates and the end-to-end update of its five
  networks and the mixture (see `_lrlivae`).

Each case runs in PyTorch's default (NCHW) layout and in channels_last.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn
import torch.nn.functional as F

torch.set_num_threads(os.cpu_count() or 1)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        h = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        return identity + F.leaky_relu(self.bn2(self.conv2(h)), 0.2)


class ResidualEncoder(nn.Module):
    def __init__(self, image_size: int, channels, latent_dim: int):
        super().__init__()
        c = tuple(channels)
        s = image_size // 2 ** len(c)
        self.stem = nn.Conv2d(3, c[0], 5, padding=2, bias=False)
        self.stem_bn = nn.BatchNorm2d(c[0])
        self.blocks = nn.ModuleList([ResidualBlock(a, b) for a, b in zip(c[:-1], c[1:])])
        self.last = ResidualBlock(c[-1], c[-1])
        self.head = nn.Linear(c[-1] * s * s, 2 * latent_dim)

    def forward(self, x):
        h = F.avg_pool2d(F.leaky_relu(self.stem_bn(self.stem(x)), 0.2), 2)
        for block in self.blocks:
            h = F.avg_pool2d(block(h), 2)
        h = self.last(h).flatten(1)
        return self.head(h).chunk(2, dim=-1)


class ResidualDecoder(nn.Module):
    def __init__(self, image_size: int, channels, latent_dim: int):
        super().__init__()
        c = tuple(channels)
        self.s, self.c_last = image_size // 2 ** len(c), c[-1]
        self.project = nn.Linear(latent_dim, c[-1] * self.s * self.s)
        rev = (c[-1],) + tuple(reversed(c))
        self.blocks = nn.ModuleList([ResidualBlock(a, b) for a, b in zip(rev[:-1], rev[1:])])
        self.last = ResidualBlock(c[0], c[0])
        self.out = nn.Conv2d(c[0], 3, 5, padding=2)

    def forward(self, z):
        h = F.relu(self.project(z)).view(z.shape[0], self.c_last, self.s, self.s)
        for block in self.blocks:
            h = F.interpolate(block(h), scale_factor=2, mode="nearest")
        return torch.sigmoid(self.out(self.last(h)))


class CCTrunk(nn.Module):
    """nets/conv.py's ConvTrunk: conv4x4/2 (pad 1) + ReLU per entry, a VALID conv over the
    bottom map to `top` + ReLU, flattened; with `heads` dense layers on the features."""

    def __init__(self, image_size: int, channels, top: int, heads=()):
        super().__init__()
        c = (3,) + tuple(channels)
        s = image_size // 2 ** len(channels)
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 4, stride=2, padding=1)
                                    for a, b in zip(c[:-1], c[1:])])
        self.top = nn.Conv2d(c[-1], top, s)
        self.heads = nn.ModuleList([nn.Linear(top, d) for d in heads])

    def forward(self, x):
        h = x
        for conv in self.convs:
            h = F.relu(conv(h))
        h = F.relu(self.top(h)).flatten(1)
        return [head(h) for head in self.heads]


class ConvDecoder(nn.Module):
    def __init__(self, image_size: int, channels, top: int, latent_dim: int):
        super().__init__()
        c = tuple(channels)
        s = image_size // 2 ** len(c)
        self.top = top
        self.project = nn.Linear(latent_dim, top)
        self.deconv_top = nn.ConvTranspose2d(top, c[-1], s)
        outs = (c[-1],) + tuple(reversed(c[:-1])) + (3,)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)
                                      for a, b in zip(outs[:-1], outs[1:])])

    def forward(self, z):
        h = F.relu(self.project(z)).view(z.shape[0], self.top, 1, 1)
        h = F.relu(self.deconv_top(h))
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = F.relu(h)
        return torch.sigmoid(h)


class Case:
    """One training step, timed by `round(steps)` (seconds per step). `step_fn(**inputs)`
    returns the loss that one Adam over every module's parameters descends; with
    `own_update=True` it makes its own backward passes and updates instead (several players)."""

    def __init__(self, modules, step_fn, inputs, channels_last: bool, own_update: bool = False):
        self.modules = modules
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for m in modules:
            m.to(memory_format=fmt)
            m.train()
        self.inputs = {k: (v.to(memory_format=fmt) if v.dim() == 4 else v)
                       for k, v in inputs.items()}
        self.opt = None if own_update else torch.optim.Adam(
            [p for m in modules for p in m.parameters()], lr=1e-4)
        self.step_fn = step_fn
        self.round(1)   # warm-up (allocations, oneDNN primitive caches)

    def round(self, steps: int) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            if self.opt is None:
                self.step_fn(**self.inputs)
                continue
            self.opt.zero_grad(set_to_none=True)
            loss = self.step_fn(**self.inputs)
            loss.backward()
            self.opt.step()
        return (time.perf_counter() - t) / steps

    def profile(self, steps: int) -> dict[str, float]:
        """Seconds per step by kind of operator (self time, torch.profiler), in the categories
        of latent_jax.profiling: convolution (forward, backward), dot, update (the optimizer),
        elementwise/reduce and layout."""
        from torch import profiler  # pylint: disable=import-outside-toplevel

        with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
            self.round(steps)
        out: dict[str, float] = {}
        for event in prof.key_averages():
            key = operator_category(event.key)
            if key is not None:
                out[key] = out.get(key, 0.0) + event.self_cpu_time_total * 1e-6 / steps
        return out


def operator_category(name: str) -> str | None:
    """latent_jax.profiling's category (and pass) of a PyTorch operator; None for the
    profiler's own and Python's records."""
    n = name.lower()
    if not n.startswith(("aten::", "mkldnn", "optimizer", "autograd::")):
        return "update" if "optimizer" in n else None
    if "conv" in n:
        return "convolution, backward" if "backward" in n else "convolution, forward"
    if any(k in n for k in ("::mm", "addmm", "bmm", "matmul", "linear", "::dot")):
        return "dot"
    if "_foreach" in n or "adam" in n or "optimizer" in n:
        return "update"
    if any(k in n for k in ("copy", "transpose", "permute", "contiguous", "view", "reshape",
                            "cat", "pad", "slice", "expand", "as_strided", "empty", "zero")):
        return "layout"
    return "elementwise/reduce"


def _vac(config, channels_last: bool) -> Case:
    m = config.model
    size, batch = int(config.data.image_size), int(config.batch_size)
    n = len(config.data.labels)
    outputs = n + (1 if config.method == "introvac" else 0)
    enc = ResidualEncoder(size, m.channels, int(m.latent_dim))
    dec = ResidualDecoder(size, m.channels, int(m.latent_dim))
    cls = nn.Linear(int(m.latent_dim), outputs, bias=False)

    def step(x, y):
        mu, logvar = enc(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        xr = dec(z)
        l_ae = (x - xr).abs().mean()
        l_cl = F.binary_cross_entropy_with_logits(cls(z), y)
        l_kl = (0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)).mean()
        return 100.0 * l_ae + 10.0 * l_cl + 3.0 * l_kl

    inputs = dict(x=torch.rand(batch, 3, size, size),
                  y=(torch.rand(batch, outputs) > 0.5).float())
    return Case([enc, dec, cls], step, inputs, channels_last)


def _introvac_adversarial(config, channels_last: bool) -> Case:
    """IntroVAC's introspective step (phase 1) with the passes latent_jax's makes
    (methods/introvac.py): one decode of the prior samples X_g, kept for the decoder's
    gradient; the encoder/classifier loss (100 L1 + 10 BCE over the n + 1 outputs against
    [y, real] + 3 KL + the fake logits of the detached reconstruction and X_g re-encoded at the
    mean), its backward pass and the encoder's and classifier's Adam updates; then the decoder's
    adversarial loss (a second decode of the detached codes, both re-encoded by the updated
    encoder and classifier, whose weights get no gradient), its backward pass and the decoder's
    Adam update with both losses' gradients."""
    m = config.model
    size, batch = int(config.data.image_size), int(config.batch_size)
    n, latent = len(config.data.labels), int(m.latent_dim)
    enc = ResidualEncoder(size, m.channels, latent)
    dec = ResidualDecoder(size, m.channels, latent)
    cls = nn.Linear(latent, n + 1, bias=False)
    ec_params = list(enc.parameters()) + list(cls.parameters())
    opt_ec = torch.optim.Adam(ec_params, lr=1e-4)
    opt_d = torch.optim.Adam(dec.parameters(), lr=1e-4)
    bce = F.binary_cross_entropy_with_logits

    def fake_logit(images):
        mu, _ = enc(images)
        return cls(mu)

    def step(x, y):
        opt_ec.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        real = torch.zeros(batch, 1)
        x_g = dec(torch.randn(batch, latent))
        mu, logvar = enc(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x_r = dec(z)
        l_ae = (x - x_r).abs().mean()
        l_cl = bce(cls(z), torch.cat([y, real], dim=-1))
        l_kl = (0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)).mean()
        fake_rr = fake_logit(x_r.detach())[:, n]
        fake_g = fake_logit(x_g.detach())[:, n]
        l_ec = bce(fake_rr, torch.ones_like(fake_rr)) + bce(fake_g, torch.ones_like(fake_g))
        (100.0 * l_ae + 10.0 * l_cl + 3.0 * l_kl + l_ec).backward()
        opt_ec.step()
        for p in ec_params:
            p.requires_grad_(False)
        x_rr = dec(z.detach())
        out_rr, out_g = fake_logit(x_rr), fake_logit(x_g)
        l_g = bce(out_rr, torch.cat([y, real], dim=-1)) + bce(out_g[:, n], torch.zeros(batch))
        l_g.backward()
        for p in ec_params:
            p.requires_grad_(True)
        opt_d.step()

    inputs = dict(x=torch.rand(batch, 3, size, size), y=(torch.rand(batch, n) > 0.5).float())
    return Case([enc, dec, cls], step, inputs, channels_last, own_update=True)


def _ccvae(config, channels_last: bool) -> Case:
    m = config.model
    size, batch = int(config.data.image_size), int(config.batch_size)
    latent = len(config.data.labels) * int(m.label_dims) + int(m.free_dims)
    enc = CCTrunk(size, m.channels, int(m.top), (latent, latent))
    dec = ConvDecoder(size, m.channels, int(m.top), latent)

    def step(x):
        loc, raw_scale = enc(x)
        scale = F.softplus(raw_scale) + 1e-3
        z = loc + scale * torch.randn_like(loc)
        xr = dec(z)
        log_lik = (-(x - xr).abs() - 0.6931471805599453).flatten(1).sum(-1)
        kl = (0.5 * (scale ** 2 + loc ** 2 - 1.0) - torch.log(scale)).sum(-1)
        return -(log_lik - kl).mean()

    return Case([enc, dec], step, dict(x=torch.rand(batch, 3, size, size)), channels_last)


class LarsenTrunk(nn.Module):
    """nets/larsen.py's ConvTrunk: conv5x5/2 (no bias) + BatchNorm + ReLU per entry, flatten,
    dense (no bias) + BatchNorm + ReLU."""

    def __init__(self, image_size: int, channels, hidden: int):
        super().__init__()
        c = (3,) + tuple(channels)
        s = image_size // 2 ** len(channels)
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 5, stride=2, padding=2, bias=False)
                                    for a, b in zip(c[:-1], c[1:])])
        self.bns = nn.ModuleList([nn.BatchNorm2d(b) for b in c[1:]])
        self.fc = nn.Linear(c[-1] * s * s, hidden, bias=False)
        self.fc_bn = nn.BatchNorm1d(hidden)

    def forward(self, x):
        h = x
        for conv, bn in zip(self.convs, self.bns):
            h = F.relu(bn(conv(h)))
        return F.relu(self.fc_bn(self.fc(h.flatten(1))))


class LarsenDecoder(nn.Module):
    """nets/larsen.py's ConvDecoder: dense + BatchNorm + ReLU to the bottom map, per reversed
    entry a transposed conv5x5/2 (or nearest x2 + conv5x5 with upsample='resize') + BatchNorm +
    ReLU, conv5x5 to the image, sigmoid."""

    def __init__(self, image_size: int, channels, code_dim: int, upsample: str):
        super().__init__()
        c = tuple(channels)
        self.s, self.c_last, self.upsample = image_size // 2 ** len(c), c[-1], upsample
        self.project = nn.Linear(code_dim, c[-1] * self.s * self.s, bias=False)
        self.project_bn = nn.BatchNorm1d(c[-1] * self.s * self.s)
        ins = (c[-1],) + tuple(reversed(c))[:-1]
        outs = tuple(reversed(c))
        if upsample == "transpose":
            self.ups = nn.ModuleList([nn.ConvTranspose2d(a, b, 5, stride=2, padding=2,
                                                         output_padding=1, bias=False)
                                      for a, b in zip(ins, outs)])
        else:
            self.ups = nn.ModuleList([nn.Conv2d(a, b, 5, padding=2, bias=False)
                                      for a, b in zip(ins, outs)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(b) for b in outs])
        self.out = nn.Conv2d(c[0], 3, 5, padding=2)

    def forward(self, code):
        h = F.relu(self.project_bn(self.project(code)))
        h = h.view(code.shape[0], self.c_last, self.s, self.s)
        for up, bn in zip(self.ups, self.bns):
            if self.upsample != "transpose":
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.relu(bn(up(h)))
        return torch.sigmoid(self.out(h))


def _mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def _csvae(config, channels_last: bool) -> Case:
    """CSVAE's step (methods/csvae.py): the Larsen trunk with a z head on its features and a w
    head on [features, y], the decoder on [w, z]; 20 x Gaussian NLL + KL(w) + 0.2 KL(z) +
    10 x the adversary's negative entropy of y given z (the adversary's weights held fixed:
    no gradient to them), backward and one Adam over encoder and decoder; then the adversary's
    cross-entropy on the detached z, its own backward and Adam."""
    m, lo = config.model, config.loss
    size, batch = int(config.data.image_size), int(config.batch_size)
    k, zd, wd = len(config.data.labels), int(m.z_dim), int(m.w_dim)
    trunk = LarsenTrunk(size, m.channels, int(m.hidden))
    head_z = nn.Linear(int(m.hidden), 2 * zd)
    head_w = nn.Linear(int(m.hidden) + k, 2 * k * wd)
    dec = LarsenDecoder(size, m.channels, k * wd + zd, str(m.upsample))
    adv = _mlp((zd,) + tuple(m.adversary_hidden) + (k,))
    opt = torch.optim.Adam([p for mod in (trunk, head_z, head_w, dec) for p in mod.parameters()],
                           lr=5e-4)
    opt_adv = torch.optim.Adam(adv.parameters(), lr=5e-4)
    std = float(lo.decoder_std)

    def kl(mu, logvar, mean, sd):
        return (torch.log(sd) - 0.5 * logvar + (logvar.exp() + (mu - mean) ** 2)
                / (2 * sd ** 2) - 0.5).sum(-1)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        h = trunk(x)
        mu_z, lv_z = head_z(h).chunk(2, dim=-1)
        mu_w, lv_w = head_w(torch.cat([h, y], -1)).chunk(2, dim=-1)
        z = mu_z + torch.exp(0.5 * lv_z) * torch.randn_like(mu_z)
        w = mu_w + torch.exp(0.5 * lv_w) * torch.randn_like(mu_w)
        xr = dec(torch.cat([w, z], -1))
        rec = (0.5 * ((x - xr) / std) ** 2).flatten(1).sum(-1).mean()
        yb = (y > 0.5).repeat_interleave(wd, dim=-1)
        pm = torch.where(yb, torch.zeros(()), torch.full((), 3.0))
        ps = torch.where(yb, torch.full((), 0.1), torch.ones(()))
        kl_w = kl(mu_w, lv_w, pm, ps).mean()
        kl_z = kl(mu_z, lv_z, torch.zeros(()), torch.ones(())).mean()
        for p in adv.parameters():
            p.requires_grad_(False)
        q = torch.sigmoid(adv(z))
        neg_entropy = (q * torch.log(q + 1e-7) + (1 - q) * torch.log(1 - q + 1e-7)).sum(-1).mean()
        for p in adv.parameters():
            p.requires_grad_(True)
        total = (float(lo.reconstruction) * rec + float(lo.kl_w) * kl_w
                 + float(lo.kl_z) * kl_z + float(lo.encoder_adversarial) * neg_entropy)
        total.backward()
        opt.step()
        opt_adv.zero_grad(set_to_none=True)
        nll = F.binary_cross_entropy_with_logits(adv(z.detach()), y, reduction="none").sum(-1)
        (float(lo.adversary) * nll.mean()).backward()
        opt_adv.step()

    inputs = dict(x=torch.rand(batch, 3, size, size), y=(torch.rand(batch, k) > 0.5).float())
    return Case([trunk, head_z, head_w, dec, adv], step, inputs, channels_last, own_update=True)


class IFEncoder(nn.Module):
    """methods/ifcvaegan.py's Encoder: conv5x5/2 (pad 2) + ReLU per entry, flatten, dense heads
    mu, logvar and the label logits."""

    def __init__(self, image_size: int, channels, latent: int, labels: int, heads: bool = True):
        super().__init__()
        c = (3,) + tuple(channels)
        s = image_size // 2 ** len(channels)
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 5, stride=2, padding=2)
                                    for a, b in zip(c[:-1], c[1:])])
        flat = c[-1] * s * s
        self.heads = nn.Linear(flat, 2 * latent + labels) if heads else nn.Linear(flat, 1)
        self.latent = latent

    def forward(self, x):
        h = x
        for conv in self.convs:
            h = F.relu(conv(h))
        return self.heads(h.flatten(1))


class IFDecoder(nn.Module):
    """methods/ifcvaegan.py's Decoder: dense + ReLU to the bottom map, transposed conv3x3/2 +
    BatchNorm + ReLU per reversed entry but the last, transposed conv3x3/2 to the image."""

    def __init__(self, image_size: int, channels, code_dim: int):
        super().__init__()
        c = tuple(channels)
        self.s, self.c_last = image_size // 2 ** len(c), c[-1]
        self.project = nn.Linear(code_dim, c[-1] * self.s * self.s)
        chans = (c[-1],) + tuple(reversed(c[:-1]))
        self.ups = nn.ModuleList([nn.ConvTranspose2d(a, b, 3, stride=2, padding=1,
                                                     output_padding=1)
                                  for a, b in zip(chans[:-1], chans[1:])])
        self.bns = nn.ModuleList([nn.BatchNorm2d(b) for b in chans[1:]])
        self.to_image = nn.ConvTranspose2d(c[0], 3, 3, stride=2, padding=1, output_padding=1)

    def forward(self, y_hat, z):
        h = F.relu(self.project(torch.cat([y_hat, z], -1)))
        h = h.view(z.shape[0], self.c_last, self.s, self.s)
        for up, bn in zip(self.ups, self.bns):
            h = F.relu(bn(up(h)))
        return torch.sigmoid(self.to_image(h))


def _ifcvaegan(config, channels_last: bool) -> Case:
    """IFcVAEGAN's step (methods/ifcvaegan.py with the `pixel_sum` objective's reductions: the
    default objective's only scale the same terms, at the same cost): one objective whose
    backward gives every player its gradient: BCE reconstruction + alpha KL + rho L_class +
    delta x the generator's GAN terms (the discriminator's weights detached) + the
    discriminator's L_gan on detached images + L_aux on a detached z - aux x L_aux through a
    detached auxiliary; one RMSprop step per player. The prior sample decode and the two
    discriminator passes are the JAX step's."""
    from torch.func import functional_call  # pylint: disable=import-outside-toplevel

    m, lo = config.model, config.loss
    size, batch = int(config.data.image_size), int(config.batch_size)
    k, latent = len(config.data.labels), int(m.latent_dim)
    enc = IFEncoder(size, m.channels, latent, k)
    dec = IFDecoder(size, m.channels, k + latent)
    disc = IFEncoder(size, m.channels, latent, k, heads=False)
    aux = _mlp((latent,) + tuple(m.auxiliary_hidden) + (k,))
    opts = [torch.optim.RMSprop(mod.parameters(), lr=2e-4, alpha=0.5 if mod is disc else 0.99,
                                eps=1e-8)
            for mod in (enc, dec, disc, aux)]
    bce = F.binary_cross_entropy_with_logits

    def detached(mod):
        return {n: p.detach() for n, p in mod.named_parameters()}

    def step(x, y):
        for o in opts:
            o.zero_grad(set_to_none=True)
        out = enc(x)
        mu, logvar, y_logit = out[:, :latent], out[:, latent:2 * latent], out[:, 2 * latent:]
        y_hat = torch.sigmoid(y_logit)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x_hat = dec(y_hat, z)
        x_p = dec(y, torch.randn_like(mu))
        l_rec = F.binary_cross_entropy(x_hat.clamp(1e-7, 1 - 1e-7), x,
                                       reduction="sum") / batch
        l_kl = (0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)).sum(-1).mean()
        l_class = bce(y_logit, y)
        d = disc(torch.cat([x, x_hat.detach(), x_p.detach()]))[:, 0]
        real, fake = torch.ones(batch), torch.zeros(batch)
        l_gan = (bce(d[:batch], real) + bce(d[batch:2 * batch], fake)
                 + bce(d[2 * batch:], fake)) / 3.0
        g = functional_call(disc, detached(disc), (torch.cat([x_hat, x_p]),))[:, 0]
        gen = -(bce(g[:batch], fake) + bce(g[batch:], fake)) / 3.0
        z_aux = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        l_aux_enc = bce(functional_call(aux, detached(aux), (z_aux,)), y)
        l_aux = bce(aux(z_aux.detach()), y)
        total = (l_rec + float(lo.alpha) * l_kl + float(lo.rho) * l_class
                 + float(lo.delta) * gen + l_gan - float(lo.aux) * l_aux_enc + l_aux)
        if float(lo.beta):   # Eq. 6: the reconstruction re-encoded
            total = total + float(lo.beta) * bce(enc(x_hat)[:, 2 * latent:], y_hat.detach())
        total.backward()
        for o in opts:
            o.step()

    inputs = dict(x=torch.rand(batch, 3, size, size), y=(torch.rand(batch, k) > 0.5).float())
    return Case([enc, dec, disc, aux], step, inputs, channels_last, own_update=True)


class ProjectionDiscriminator(nn.Module):
    """methods/lrlivae.py's D(x, c) without its spectral normalisation (`loss.spectral_norm`, on
    by default: one power iteration per layer and step, left out here): conv4x4/2 +
    LeakyReLU(0.1) per entry, global average pooling, phi = LeakyReLU(dense), a linear logit
    plus <embed(onehot(c)), phi>."""

    def __init__(self, channels, top: int, num_classes: int):
        super().__init__()
        c = (3,) + tuple(channels)
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 4, stride=2, padding=1)
                                    for a, b in zip(c[:-1], c[1:])])
        self.phi = nn.Linear(c[-1], top)
        self.out = nn.Linear(top, 1)
        self.embed = nn.Linear(num_classes, top, bias=False)
        self.num_classes = num_classes

    def forward(self, x, c):
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
        phi = F.leaky_relu(self.phi(h.mean(dim=(2, 3))), 0.1)
        onehot = F.one_hot(c, self.num_classes).float()
        return self.out(phi)[:, 0] + (self.embed(onehot) * phi).sum(-1)


def _lrlivae(config, channels_last: bool) -> Case:
    """Lr-LiVAE's iteration (methods/lrlivae.py, Algorithm 1, the paper's log loss): n_gm GM
    updates of encoder_s and the mixture, each on its own batch (L_cls + lambda_lkd L_lkd in log
    space), then the end-to-end update on a fresh batch: one objective whose backward pass gives
    encoder_s, encoder_u, the latent adversary, the decoder and the discriminator their
    gradients (the adversary and D held fixed where the step stops their gradients, L_rec's
    gradient to z_u scaled by w_rec_u / w_rec), one Adam (b1 = 0, b2 = 0.9) step each."""
    import math  # pylint: disable=import-outside-toplevel

    from torch.func import functional_call  # pylint: disable=import-outside-toplevel

    from latent_jax.data import pipeline as data_lib  # pylint: disable=import-outside-toplevel

    m, lo = config.model, config.loss
    size, batch = int(config.data.image_size), int(config.batch_size)
    n_gm, ds, du = int(config.train.n_gm), int(m.z_s_dim), int(m.z_u_dim)
    classes = math.prod(data_lib.dataset_num_classes(config.data).values())   # joint class
    enc_s = CCTrunk(size, m.channels, int(m.top), (ds,))
    enc_u = CCTrunk(size, m.channels, int(m.top), (du, du))
    dec = ConvDecoder(size, m.channels, int(m.top), ds + du)
    disc = ProjectionDiscriminator(m.discriminator_channels, int(m.top), classes)
    adv = _mlp((du,) + tuple(m.adversary_hidden) + (classes,))
    mixture = nn.ParameterDict({"means": nn.Parameter(torch.randn(classes, ds) * 0.1),
                                "log_var": nn.Parameter(torch.zeros(classes, ds))})
    adam = lambda mod: torch.optim.Adam(mod.parameters(), lr=5e-4, betas=(0.0, 0.9))  # noqa: E731
    # encoder_s: one Adam for the GM steps, one for the end-to-end step (as methods/lrlivae.py)
    opt_s, opt_s_gm, opt_mix = adam(enc_s), adam(enc_s), adam(mixture)
    opts = [opt_s, adam(enc_u), adam(dec), adam(disc), adam(adv)]
    w_lkd, w_rec = float(lo.lkd), float(lo.reconstruction)
    w_rec_u = 1.0 / du if lo.reconstruction_encoder_u is None else float(
        lo.reconstruction_encoder_u)
    w_kl = 10.0 / (size * size) if lo.kl is None else float(lo.kl)
    log_2pi = 1.8378770664093453

    def log_density(z, means, log_var):
        d = z[:, None, :] - means[None]
        return -0.5 * (d * d * torch.exp(-log_var)[None] + log_var[None] + log_2pi).sum(-1)

    def detached(mod):
        return {n: p.detach() for n, p in mod.named_parameters()}

    def step(x, c):
        for i in range(n_gm):   # lines 2-9
            opt_s_gm.zero_grad(set_to_none=True)
            opt_mix.zero_grad(set_to_none=True)
            dens = log_density(enc_s(x[i])[0], mixture["means"], mixture["log_var"])
            l_cls = -torch.log_softmax(dens, -1).gather(1, c[i][:, None])[:, 0]
            l_lkd = -dens.gather(1, c[i][:, None])[:, 0]
            (l_cls + w_lkd * l_lkd).mean().backward()
            opt_s_gm.step()
            opt_mix.step()
        for o in opts:
            o.zero_grad(set_to_none=True)
        xe, ce = x[-1], c[-1]
        means, log_var = mixture["means"].detach(), mixture["log_var"].detach()
        z_s_p = means[ce] + torch.exp(0.5 * log_var[ce]) * torch.randn(batch, ds)
        z_u_p = torch.randn(batch, du)
        (z_s,) = enc_s(xe)
        mu, logvar = enc_u(xe)
        z_u = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        l_kl = (0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)).sum(-1).mean()
        l_e_adv = -torch.log_softmax(functional_call(adv, detached(adv), (z_u,)), -1).mean()
        l_c_adv = -torch.log_softmax(adv(z_u.detach()), -1).gather(1, ce[:, None]).mean()
        l_lkd = -log_density(z_s, means, log_var).gather(1, ce[:, None]).mean()
        scale = w_rec_u / w_rec
        z_u_rec = z_u * scale + z_u.detach() * (1.0 - scale)   # gradient scaled, value kept
        x_f = dec(torch.cat([z_s, z_u_rec], -1))
        l_rec = (0.5 * (xe - x_f) ** 2).flatten(1).sum(-1).mean()
        x_f_g = dec(torch.cat([z_s.detach(), z_u.detach()], -1))
        x_p = dec(torch.cat([z_s_p, z_u_p], -1))
        d = disc(torch.cat([xe, x_f_g.detach(), x_p.detach()]), torch.cat([ce, ce, ce]))
        l_d = (F.softplus(-d[:batch]) + F.softplus(d[batch:2 * batch])
               + F.softplus(d[2 * batch:])).mean()
        g = functional_call(disc, detached(disc), (torch.cat([x_f_g, x_p]), torch.cat([ce, ce])))
        l_g = (F.softplus(-g[:batch]) + F.softplus(-g[batch:])).mean()
        total = (w_rec * l_rec + w_lkd * l_lkd + w_kl * l_kl
                 + float(lo.encoder_adversarial) * l_e_adv + l_c_adv
                 + float(lo.generator_adversarial) * l_g + l_d)
        total.backward()
        for o in opts:
            o.step()

    k = n_gm + 1
    inputs = dict(x=torch.rand(k, batch, 3, size, size),
                  c=torch.randint(0, classes, (k, batch)))
    return Case([enc_s, enc_u, dec, disc, adv, mixture], step, inputs, channels_last,
                own_update=True)


def case_for(config, phase: int) -> dict[str, Case] | None:
    """The PyTorch versions (default layout, channels_last) of a config's step in `phase`, or
    None where there is none."""
    builders = {("vac", 0): _vac, ("introvac", 0): _vac, ("introvac", 1): _introvac_adversarial,
                ("ccvae", 0): _ccvae, ("csvae", 0): _csvae, ("ifcvaegan", 0): _ifcvaegan,
                ("lrlivae", 0): _lrlivae}
    build = builders.get((config.method, phase))
    if build is None:
        return None
    return {"PyTorch": build(config, False), "PyTorch channels_last": build(config, True)}
