"""Data: sources (CelebA through tfds, the embedded synthetic faces) and the grain pipeline.

The interface is described in docs/contracts.md ("Data"), the data itself in docs/data.md.
"""

from latent_jax.data.celeba import DatasetNotPreparedError
from latent_jax.data.labels import DERIVED_LABELS
from latent_jax.data.labels import DerivedLabel
from latent_jax.data.labels import available_labels
from latent_jax.data.labels import compute_labels
from latent_jax.data.labels import constituents
from latent_jax.data.labels import register_derived_label
from latent_jax.data.pipeline import DATASETS
from latent_jax.data.pipeline import SPLITS
from latent_jax.data.pipeline import DataOptions
from latent_jax.data.pipeline import DataSpec
from latent_jax.data.pipeline import LabeledSource
from latent_jax.data.pipeline import attribute_regions
from latent_jax.data.pipeline import balanced_subset_indices
from latent_jax.data.pipeline import default_data_config
from latent_jax.data.pipeline import get_data_spec
from latent_jax.data.pipeline import iterate_eval_batches
from latent_jax.data.pipeline import label_frequencies
from latent_jax.data.pipeline import make_source
from latent_jax.data.pipeline import make_train_iterator
from latent_jax.data.pipeline import options
from latent_jax.data.pipeline import supervised_positions
from latent_jax.data.preprocess import PREPROCESSORS

__all__ = [
    "DATASETS",
    "DERIVED_LABELS",
    "DataOptions",
    "DataSpec",
    "DatasetNotPreparedError",
    "DerivedLabel",
    "LabeledSource",
    "PREPROCESSORS",
    "SPLITS",
    "attribute_regions",
    "available_labels",
    "balanced_subset_indices",
    "compute_labels",
    "constituents",
    "default_data_config",
    "get_data_spec",
    "iterate_eval_batches",
    "label_frequencies",
    "make_source",
    "make_train_iterator",
    "options",
    "register_derived_label",
    "supervised_positions",
]
