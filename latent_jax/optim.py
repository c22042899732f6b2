"""Optimizers and learning-rate schedules built from a player's config.

One config block per player (`config.optim.<player>`):

    name: 'adam' | 'rmsprop' | 'sgd'
    learning_rate: float
    b1, b2, eps: Adam moments (b1 = 0 gives Lr-LiVAE's Adam(b1=0, b2=0.9))
    decay, momentum: RMSprop (decay of the squared-gradient average; momentum as PyTorch's,
        a buffer of the scaled steps) / SGD (momentum)
    weight_decay: float, with weight_decay_mode
        'l2'        gradient += wd * param before the update (PyTorch's Adam(weight_decay=...),
                    what the reference implementations use), or
        'decoupled' AdamW-style
    schedule: kind 'constant' | 'piecewise' (multiply by `factor` at each epoch in
        `boundaries_epochs`: IntroVAC halves at 60/90/120, CSVAE's MultiStepLR uses 3^i and
        0.1^(1/7)) | 'cosine'
    grad_clip_norm: None or a float (global-norm clipping)
    groups (optional): parameter groups with their own settings, `groups.<name>` holding
        `params`, a tuple of parameter paths ('log_var', or 'trunk/conv0' for everything under
        it), and any of the keys above, which replace the player's for those parameters (the
        rest of the player's config applies to them too); parameters in no group keep the
        player's. Built with `optax.multi_transform`, so each group has its own optimizer
        state (Lr-LiVAE's reference preset lowers only the mixture's log-variances' LR); a
        `grad_clip_norm` then clips each group's gradients by their own norm.

Schedules count this player's own optimizer updates: `make_optimizer` gets the player's updates
per epoch (`steps_per_epoch * Method.updates_per_step(player)`, or per optimizer state of a
player with several, `updates_per_step(player, state)`), so a player stepped several
times per iteration decays its learning rate per epoch, not several times too fast. The schedule lives in the optimizer state and is
restored with it, so a resumed run continues the same schedule (the IntroVAC reference re-created
its optimizers during training, resetting Adam's moments and dropping the schedule).
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from latent_jax.errors import ConfigError


def default_optimizer_config(learning_rate: float = 2e-4, **overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(dict(
        name="adam",
        learning_rate=learning_rate,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        decay=0.99,
        momentum=0.0,
        weight_decay=0.0,
        weight_decay_mode="l2",
        grad_clip_norm=ml_collections.config_dict.placeholder(float),
        schedule=ml_collections.ConfigDict(dict(
            kind="constant",
            boundaries_epochs=(),
            factor=0.5,
            warmup_epochs=0.0,
            total_epochs=0.0,
        )),
    ))
    cfg.update(overrides)
    return cfg


def make_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int, key: str) -> optax.Schedule:
    lr = float(cfg.learning_rate)
    sched = cfg.schedule
    if sched.kind == "constant":
        return optax.constant_schedule(lr)
    if sched.kind == "piecewise":
        boundaries = {}
        for epoch in sched.boundaries_epochs:
            step = int(round(float(epoch) * steps_per_epoch))
            boundaries[step] = boundaries.get(step, 1.0) * float(sched.factor)
        return optax.piecewise_constant_schedule(lr, boundaries)
    if sched.kind == "cosine":
        total = max(1, int(round(float(sched.total_epochs) * steps_per_epoch)))
        warmup = int(round(float(sched.warmup_epochs) * steps_per_epoch))
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), total)
    raise ConfigError(f"{key}.schedule.kind: unknown schedule {sched.kind!r}; "
                     "known: constant, piecewise, cosine")


UNGROUPED = "ungrouped"   # multi_transform's label of the parameters in no group


def make_optimizer(cfg: ml_collections.ConfigDict, steps_per_epoch: int,
                   key: str = "config.optim") -> optax.GradientTransformation:
    """The optax transformation of one player (of its parameter groups, if it has any)."""
    if cfg is None:
        raise ConfigError(f"{key}: missing optimizer config")
    groups = cfg.get("groups", None)
    if groups:
        return _grouped_optimizer(cfg, groups, steps_per_epoch, key)
    schedule = make_schedule(cfg, steps_per_epoch, key)
    chain = []
    if cfg.get("grad_clip_norm") is not None:
        chain.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
    wd = float(cfg.get("weight_decay", 0.0) or 0.0)
    mode = cfg.get("weight_decay_mode", "l2")
    if mode not in ("l2", "decoupled"):
        raise ConfigError(f"{key}.weight_decay_mode: {mode!r} is not 'l2' or 'decoupled'")
    if wd and mode == "l2":
        chain.append(optax.add_decayed_weights(wd))
    name = cfg.name
    if name == "adam":
        chain.append(optax.scale_by_adam(b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)))
    elif name == "rmsprop":
        # PyTorch's RMSprop: eps added outside the square root, no bias correction.
        chain.append(optax.scale_by_rms(decay=float(cfg.decay), eps=float(cfg.eps),
                                        eps_in_sqrt=False))
        if float(cfg.get("momentum", 0.0)):   # PyTorch's: a momentum buffer of the scaled step
            chain.append(optax.trace(decay=float(cfg.momentum)))
    elif name == "sgd":
        if float(cfg.momentum):
            chain.append(optax.trace(decay=float(cfg.momentum)))
    else:
        raise ConfigError(f"{key}.name: unknown optimizer {name!r}; known: adam, rmsprop, sgd")
    if wd and mode == "decoupled":
        chain.append(optax.add_decayed_weights(wd))
    chain.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*chain)


def _grouped_optimizer(cfg: ml_collections.ConfigDict, groups, steps_per_epoch: int,
                       key: str) -> optax.GradientTransformation:
    """`optax.multi_transform` over the groups of `cfg.groups` and the parameters in none."""
    player = ml_collections.ConfigDict(cfg.to_dict())
    del player["groups"]
    transforms = {UNGROUPED: make_optimizer(player, steps_per_epoch, key)}
    paths = {}
    for name, group in groups.items():
        if name == UNGROUPED:
            raise ConfigError(f"{key}.groups: {UNGROUPED!r} is reserved for the parameters in "
                              "no group")
        overrides = group.to_dict()
        names = overrides.pop("params", ())
        if isinstance(names, str) or not names:
            raise ConfigError(f"{key}.groups.{name}.params: a non-empty tuple of parameter "
                              f"paths, got {names!r}")
        paths[name] = tuple(str(n).strip("/") for n in names)
        merged = ml_collections.ConfigDict(player.to_dict())
        merged.update(overrides)
        transforms[name] = make_optimizer(merged, steps_per_epoch, f"{key}.groups.{name}")

    def labels(params):
        used = set()

        def label(path, _):
            p = jax.tree_util.keystr(path, simple=True, separator="/")
            hits = [(g, n) for g, names in paths.items() for n in names
                    if p == n or p.startswith(n + "/")]
            if len({g for g, _ in hits}) > 1:
                raise ConfigError(f"{key}.groups: parameter {p!r} is in several groups "
                                  f"({', '.join(sorted({g for g, _ in hits}))})")
            used.update(hits)
            return hits[0][0] if hits else UNGROUPED

        out = jax.tree_util.tree_map_with_path(label, params)
        for g, names in paths.items():
            for n in names:
                if (g, n) not in used:
                    raise ConfigError(f"{key}.groups.{g}.params: no parameter {n!r}")
        return out

    return optax.multi_transform(transforms, labels)
