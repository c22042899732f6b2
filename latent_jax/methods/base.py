"""The Method interface every latent_jax method implements, and the per-player state.

A *player* is a named part of a method with its own Flax module(s) and its own optax optimizer
(encoder, decoder, classifier, adversary, discriminator, ...); a player that takes several losses
in separate updates may keep one optimizer state per loss (`Method.optimizer_states`). Its state
is a `PlayerState` pytree; the optax transformation itself is static, built from the config,
never stored in the pytree. A *method* declares its players, initialises them and provides one
pure `train_step` in which all players of an iteration are updated, in the order the paper's
algorithm prescribes.
The trainer (`latent_jax.train`) only knows players, never method names.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from latent_jax import optim
from latent_jax.nets import precision
from latent_jax.nets import remat as remat_lib
from latent_jax.errors import ConfigError

PyTree = Any
States = dict  # player name -> PlayerState

# Capabilities a method may declare (`Method.capabilities`); the evaluation, the image grids,
# the CLI modes and the ablation suites read the declaration and call the matching function.
EDIT = "edit"                      # edit(states, x, changes, strength)
SAMPLE = "sample"                  # sample(states, rng, y) -> (images, accepted)
CLASSIFY = "classify"              # classify(states, x) -> label logits / class columns
LABEL_CODES = "label_codes"        # label_codes(states, x) -> one coordinate per label
ATTRIBUTE_GRID = "attribute_grid"  # attribute_grid(states, x, label: int, n)
ATTRIBUTE_GRID_PAIR = "attribute_grid_pair"  # attribute_grid(states, x, (a, b), n)
WALK = "walk"                      # latent_walk(states, x, label, num_steps), latent_walk_pair
INTERVENE = "intervene"            # intervene(states, x, label, value)
# class_interpolation(states, rng, classes [R], n) -> [R, n, H, W, C]: per class, decodes of
# random codes interpolated within the class under one random label-irrelevant code
# (Lr-LiVAE's Figure 4(a)).
CLASS_INTERPOLATION = "class_interpolation"
# relevant_code_mask() -> bool [d]: which coordinates of encode()'s code carry the labels (Lr-LiVAE's
# z_s, CSVAE's w, IFcVAEGAN's y_hat, cVAE's one-hot); the rest is the label-irrelevant code.
# Gives swap() (Lr-LiVAE's Figure 6) and sweep() (its Figure 5), written once here.
CODE_SPLIT = "code_split"

_CAPABILITY_FUNCTIONS = {
    EDIT: ("edit",), SAMPLE: ("sample",), CLASSIFY: ("classify",),
    LABEL_CODES: ("label_codes",), ATTRIBUTE_GRID: ("attribute_grid",),
    ATTRIBUTE_GRID_PAIR: ("attribute_grid",), WALK: ("latent_walk", "latent_walk_pair"),
    INTERVENE: ("intervene",), CODE_SPLIT: ("relevant_code_mask",),
    CLASS_INTERPOLATION: ("class_interpolation",),
}
KNOWN_CAPABILITIES = frozenset(_CAPABILITY_FUNCTIONS)


@flax.struct.dataclass
class PlayerState:
    """Parameters, BatchNorm statistics and optimizer state of one player, and `buffers`: state
    that no optimizer trains but the method updates itself (moving averages, class statistics,
    mixture statistics), checkpointed with the rest. `opt_state` is the optax state, or, for a
    player with several (`Method.optimizer_states`), a dict of them by name."""

    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    buffers: PyTree = flax.struct.field(default_factory=dict)

    @property
    def variables(self) -> dict:
        """Flax variables for `module.apply` in evaluation mode."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def apply_updates(state: PlayerState, tx, grads: PyTree, batch_stats: PyTree | None = None,
                  buffers: PyTree | None = None, opt_state_key: str | None = None
                  ) -> PlayerState:
    """One optimizer step for one player; optionally replaces its BatchNorm statistics and its
    buffers. A player stepped several times per iteration calls this once per update (and
    declares it in `Method.updates_per_step`). `tx` is `Method.tx(player)`; a player with
    several optimizer states names the one this update uses (`opt_state_key`), the others are
    kept as they are."""
    if opt_state_key is None:
        if isinstance(tx, Mapping):
            raise ValueError(f"this player has the optimizer states {sorted(tx)}: "
                             "apply_updates needs opt_state_key")
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
    else:
        updates, own = tx[opt_state_key].update(grads, state.opt_state[opt_state_key],
                                                state.params)
        opt_state = dict(state.opt_state, **{opt_state_key: own})
    params = optax.apply_updates(state.params, updates)
    return PlayerState(params=params,
                       batch_stats=state.batch_stats if batch_stats is None else batch_stats,
                       opt_state=opt_state,
                       buffers=state.buffers if buffers is None else buffers)


def init_player(module: flax.linen.Module, tx, rng: jax.Array, *args, **kwargs) -> PlayerState:
    """Initialises a module's variables and its optimizer state(s) (`tx` is `Method.tx(player)`:
    a transformation, or a dict of them for a player with several optimizer states)."""
    variables = module.init(rng, *args, **kwargs)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    opt_state = ({k: t.init(params) for k, t in tx.items()} if isinstance(tx, Mapping)
                 else tx.init(params))
    return PlayerState(params=params, batch_stats=batch_stats, opt_state=opt_state)


class Method(abc.ABC):
    """Base class of every method.

    Subclasses set `players()` and implement `init`, `train_step` and the capabilities.
    Everything here must be pure and jittable with `self` closed over (static).
    """

    #: Registry name, set by `register`.
    name: str = ""

    #: What the method can do (see the constants above); checked by `register`.
    capabilities: frozenset = frozenset({EDIT, SAMPLE})

    #: Config keys (a trailing '.' covers a block) that only inference reads, so that a run may
    #: resume with them changed; added to `configlib.RESUME_SAFE_KEYS`.
    resume_safe_keys: tuple[str, ...] = ()

    #: Every key the method reads ('loss.alpha', 'train.n_gm', ...) in `config.loss`,
    #: `config.model` and its own top-level blocks (those `configlib.base_config` does not
    #: have: 'train', 'edit', 'introspection', ...); `model.compute_dtype` and `model.remat`
    #: are every method's. Any other key there is refused (`check_config_keys`), so that a
    #: setting a method ignores cannot train the same model under another name; the configs
    #: drop the keys of a family's other methods (`drop_unread_config_keys`), and
    #: tests/test_method_contract.py checks that each declared key is read.
    config_keys: frozenset = frozenset()

    def __init__(self, config: ml_collections.ConfigDict, data_spec, steps_per_epoch: int):
        self.config = config
        self.remat = bool((config.get("model") or {}).get("remat", False))
        self.compute_dtype = precision.compute_dtype(
            (config.get("model") or {}).get("compute_dtype", "float32"))
        self.data_spec = data_spec
        self.steps_per_epoch = int(steps_per_epoch)
        self.image_shape = tuple(data_spec.image_shape)
        self.label_names = tuple(data_spec.label_names)
        self.num_labels = len(self.label_names)
        # Class count of each label where the dataset sets it (`DataSpec.num_classes`); the
        # methods' class layouts read it through `labels.num_classes(name, label_classes)`.
        self.label_classes = dict(getattr(data_spec, "num_classes", None) or {})
        # Schedules count each optimizer state's own updates: a player (or one of its
        # optimizer states) updated k times per iteration has k * steps_per_epoch updates per
        # epoch.
        make = lambda name, per_step: optim.make_optimizer(  # noqa: E731
            config.optim.get(name), self.steps_per_epoch * per_step, key=f"config.optim.{name}")
        self._txs = {}
        for name in self.player_names():
            states = self.optimizer_states(name)
            self._txs[name] = ({s: make(name, self.updates_per_step(name, s)) for s in states}
                               if states else make(name, self.updates_per_step(name)))

    def __setattr__(self, name: str, value: Any):
        # Every Flax module a method keeps as an attribute computes in config.model.compute_dtype
        # (latent_jax.nets.precision) and, with config.model.remat, recomputes its activations
        # in the backward pass (latent_jax.nets.remat): one rule for every method, nothing to
        # add to a new one.
        if isinstance(value, flax.linen.Module) and "compute_dtype" in self.__dict__:
            value = precision.wrap(remat_lib.wrap(value, self.remat), self.compute_dtype)
        object.__setattr__(self, name, value)

    # ----------------------------------------------------------------- players and training
    @abc.abstractmethod
    def player_names(self) -> tuple[str, ...]:
        """Names of the players; each has an optimizer under `config.optim.<name>`."""

    @classmethod
    def batches_per_step(cls, config: ml_collections.ConfigDict) -> int:
        """How many training batches one iteration consumes (default 1; Lr-LiVAE's n_gm GM
        steps each take their own batch). With k > 1 the trainer stacks k consecutive batches
        of the stream on axis 1: every entry of `batch` is [B, k, ...] and sub-batch i is
        `[:, i]`, its rows sharded over the devices like a single batch's. An epoch is then
        n_train // (batch_size * k) iterations."""
        del config
        return 1

    def optimizer_states(self, player: str) -> tuple[str, ...]:
        """Names of `player`'s optimizer states when it takes several losses in separate
        updates that must not share the optimizer's moments (Lr-LiVAE's encoder_s: 'gm' for
        its GM steps, 'end_to_end' for its end-to-end step, as the reference's two Adam
        instances on one trunk: with one Adam state, the larger loss's squared gradients
        shrink the other's steps). Each is its own instance of `config.optim.<player>`, whose
        schedule counts that state's updates (`updates_per_step(player, state)`);
        `PlayerState.opt_state` is a dict of them and `apply_updates` names the one it uses.
        () (the default): one optimizer state for all of the player's updates."""
        del player
        return ()

    def updates_per_step(self, player: str, state: str | None = None) -> int:
        """How many optimizer updates `player` makes in one training iteration (default 1;
        e.g. Lr-LiVAE's encoder_s: n_gm GM steps plus the end-to-end step), or, with `state`,
        how many of them use that optimizer state (`optimizer_states`). Its LR schedule,
        given in epochs, is converted with this factor, so that it decays per epoch and not
        k times too fast."""
        del player, state
        return 1

    def players(self) -> Mapping[str, Any]:
        """`tx(player)` of every player."""
        return dict(self._txs)

    def tx(self, player: str):
        """The player's optax transformation, or a dict of them by optimizer state for a
        player with several (`optimizer_states`)."""
        return self._txs[player]

    @abc.abstractmethod
    def init(self, rng: jax.Array) -> States:
        """Initial state of every player."""

    def phase(self, step: int) -> int:
        """Static training phase at `step` (e.g. a pre-training phase). Default: one phase."""
        del step
        return 0

    def phase_boundaries(self) -> tuple[int, ...]:
        """Steps at which `phase` changes (for logging and tests)."""
        return ()

    @abc.abstractmethod
    def train_step(self, states: States, batch: Mapping[str, jax.Array], rng: jax.Array,
                   phase: int) -> tuple[States, dict[str, jax.Array]]:
        """One training iteration of every player. Pure; jitted by the trainer."""

    # ----------------------------------------------------------------- capabilities
    @abc.abstractmethod
    def encode(self, states: States, x: jax.Array) -> jax.Array:
        """Posterior mean of the latent code, [B, d]."""

    @abc.abstractmethod
    def decode(self, states: States, z: jax.Array) -> jax.Array:
        """Images [B, H, W, C] in [0, 1] from latent codes."""

    def reconstruct(self, states: States, x: jax.Array) -> jax.Array:
        return self.decode(states, self.encode(states, x))

    #: Whether `reconstruct_given_labels` uses the labels (a method whose encoder or decoder
    #: is conditioned on the class, e.g. cVAE-GAN: Lr-LiVAE's Sec. 4.5 gives it the label).
    reconstructs_given_labels: bool = False

    def reconstruct_given_labels(self, states: States, x: jax.Array, y: jax.Array) -> jax.Array:
        """Reconstructions of x when its true labels y [B, n_labels] are known (the
        evaluation's reconstruction and inpainting columns); by default `reconstruct`, which
        infers whatever the method conditions on from the image."""
        del y
        return self.reconstruct(states, x)

    @abc.abstractmethod
    def edit(self, states: States, x: jax.Array, changes: jax.Array,
             strength: float | None = None) -> jax.Array:
        """Attribute edit; `changes` [B, n_labels] in {-1, 0, +1} (remove / keep / add)."""

    @abc.abstractmethod
    def sample(self, states: States, rng: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Class-conditional samples for labels `y` [n, n_labels]; returns (images, accepted)."""

    def classify(self, states: States, x: jax.Array) -> jax.Array:
        """Label logits [B, n_labels] (capability `classify`)."""
        raise NotImplementedError(f"method {self.name!r} does not declare 'classify'")

    def label_codes(self, states: States, x: jax.Array) -> jax.Array:
        """One latent coordinate per label [B, n_labels] (e.g. CCVAE's z_c; capability
        `label_codes`). Used for the 1-D embeddings and their class-conditional Wasserstein
        distances."""
        raise NotImplementedError(f"method {self.name!r} does not declare 'label_codes'")

    def relevant_code_mask(self) -> np.ndarray:
        """bool [d]: the coordinates of `encode`'s code that carry the labels (capability
        `code_split`); `decode` must accept any mix of two images' codes."""
        raise NotImplementedError(f"method {self.name!r} does not declare 'code_split'")

    def swap(self, states: States, x_labels: jax.Array, x_rest: jax.Array) -> jax.Array:
        """Decodes the label-relevant code of `x_labels` with the label-irrelevant code of
        `x_rest` (both [B, H, W, C], paired row by row; Lr-LiVAE's Figure 6)."""
        mask = jnp.asarray(self.relevant_code_mask())
        return self.decode(states, jnp.where(mask, self.encode(states, x_labels),
                                             self.encode(states, x_rest)))

    def sweep_dims(self) -> int:
        """How many label-irrelevant coordinates `sweep` can move."""
        return int(np.sum(~np.asarray(self.relevant_code_mask(), bool)))

    def sweep(self, states: States, x: jax.Array, dim: int, values: jax.Array) -> jax.Array:
        """[B, V, H, W, C]: each image decoded with its label-relevant code kept and the
        `dim`-th label-irrelevant coordinate set to each of `values` [V], the others at their
        posterior means (Lr-LiVAE's Figure 5)."""
        # `dim` may be traced (the grids vmap over it: one compilation for every row).
        index = jnp.asarray(np.flatnonzero(~np.asarray(self.relevant_code_mask(), bool)))[dim]
        code = self.encode(states, x)
        out = jax.vmap(lambda v: self.decode(states, code.at[:, index].set(v)))(
            jnp.asarray(values, code.dtype))
        return jnp.moveaxis(out, 0, 1)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


def jit_once(method: Method, key, make: Callable[[], Callable]) -> Callable:
    """`make()` (a jitted function) once per method instance and key, kept on the method: the
    evaluations and image grids of one run (at fractions of a budget, every
    `eval_every_steps`, the final one) compile each capability once instead of once per call
    (about 10 of a 17 s evaluation of a 32 px CCVAE were these compilations), and the cache
    goes with the method."""
    cache = vars(method).setdefault("_evaluation_jit_cache", {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


_REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str):
    """Class decorator: registers a Method subclass under `name`, sets its `name`, and checks
    that every declared capability is known and has its functions."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        unknown = set(cls.capabilities) - KNOWN_CAPABILITIES
        if unknown:
            raise ValueError(f"method {name!r} declares unknown capabilities {sorted(unknown)}")
        for cap in cls.capabilities:
            for fn in _CAPABILITY_FUNCTIONS[cap]:
                impl = getattr(cls, fn, None)
                if impl is None or impl is getattr(Method, fn, None):
                    raise ValueError(f"method {name!r} declares {cap!r} but has no {fn}()")
        # The registry name is per registered class (a subclass registered under another name
        # gets its own).
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered_methods() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def method_class(name: str):
    if name not in _REGISTRY:
        raise ConfigError(f"config.method: unknown method {name!r}; known: "
                         f"{', '.join(registered_methods())}")
    return _REGISTRY[name]


EVERY_METHOD_READS = frozenset({"model.compute_dtype", "model.remat"})


@functools.cache
def _shared_top_level_keys() -> frozenset:
    from latent_jax import configlib   # pylint: disable=import-outside-toplevel
    return frozenset(configlib.base_config().keys())


def _method_blocks(config) -> list[str]:
    """The config blocks whose keys a method must read: loss, model and every top-level key the
    shared base config does not have."""
    shared = _shared_top_level_keys()
    return ["loss", "model"] + sorted(k for k in config.keys() if k not in shared)


def unread_config_keys(config) -> list[str]:
    """The dotted keys in the method's blocks of `config` (a ConfigDict or a dict) that
    `config.method` does not read (`Method.config_keys`)."""
    declared = method_class(config["method"]).config_keys | EVERY_METHOD_READS
    out = []
    for block in _method_blocks(config):
        value = config.get(block) if block in config else None
        keys = [f"{block}.{k}" for k in value.keys()] if hasattr(value, "keys") else (
            [block] if block in config and block not in ("loss", "model") else [])
        out += [k for k in keys if k not in declared and k.split(".")[0] + "." not in declared]
    return out


def check_config_keys(config) -> None:
    """ConfigError naming the first key of the config that its method does not read."""
    unread = unread_config_keys(config)
    if unread:
        more = f" (and {', '.join(unread[1:])})" if len(unread) > 1 else ""
        raise ConfigError(f"config.{unread[0]}: method {config['method']!r} does not read it"
                          f"{more}; remove it or use a method that does")


def drop_unread_config_keys(config):
    """Removes (in place) the keys `check_config_keys` would refuse, and returns the config: for
    a family's config files (which share presets between methods) and for configs saved by runs
    of earlier versions (a key the method never read changed nothing)."""
    for key in unread_config_keys(config):
        block, _, name = key.partition(".")
        if name:
            del config[block][name]
        else:
            del config[block]
    return config


def get_method(config: ml_collections.ConfigDict, data_spec, steps_per_epoch: int) -> Method:
    """Builds the method named by `config.method`, refusing keys it does not read."""
    check_config_keys(config)
    return method_class(config.method)(config, data_spec, steps_per_epoch)


def tree_l2(tree: PyTree) -> jax.Array:
    """Global L2 norm of a pytree (for gradient-norm metrics)."""
    return optax.tree.norm(tree)


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy on logits (numerically stable)."""
    return optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype))


def kl_to_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension, same shape as mu."""
    return 0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar)
