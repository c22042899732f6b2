"""Lr-LiVAE (paper 002: Zheng & Sun, CVPR 2019) configs, shared by its baselines.

`configs/cvae.py` and `configs/cvaegan.py` load this file and change only `method` (and the
players' optimizers), so the three models of a preset have the same data, networks, latent
sizes, optimizers and training length.

Presets (`--config=configs/lrlivae.py:<preset>`):
  synthetic (default)   the embedded synthetic faces at 32x32, the class the 6-way Hair_MULTI
                        label; the paper's weights and log-loss (Eq. 10), sized for a 2-core CPU
  synthetic_reference   the same with the reference code's choices (`reference_choices`):
                        hinge loss, prior samples of random classes, the last GM batch
                        reused for the end-to-end step, L_rec x10 as a per-element mean on
                        every player, L_kl x1 as a per-dimension mean, L_lkd x1 in the
                        end-to-end step, the mixture's log-variances' LR / 10 every 30 epochs
  synthetic_nogan       the paper's model without the pixel discriminator (a VAE)
  identities            the FaceScrub analogue: the embedded synthetic_identities at 32x32,
                        the class the identity (100 identities, sized for a 2-core CPU; the
                        paper's FaceScrub has 530), otherwise as `synthetic`
  identities_reference  the same with the reference code's choices (as synthetic_reference)
  identities_hinge      identities with the reference's adversarial loss only (hinge; D is
                        spectrally normalised in every preset), the paper's weights otherwise
  identities_nogan      the same without the pixel discriminator
  identities_semi       identities plus the training images of 40 identities outside the label
                        set, never labelled (Sec. 3.6 / 4.4; the paper's 200 CASIA identities
                        next to FaceScrub's 530), through the semi-supervised stream
  celeba_identities     CelebA at 64x64 (centre square crop), the class the identity: the 530
                        most frequent persons (FaceScrub's count), each person's images split
                        80/10/10 into train/validation/test (dataset celeb_a_identities; CelebA's
                        official partition puts each person in one split only); the family's
                        paper-sized networks (z_s = z_u = 512)
  celeba_hair           CelebA at 64x64 on its official partition, the class the 6-way
                        Hair_MULTI label built from its hair attributes
  toy                   Sec. 4.1's 2-D toy (3 classes, x label relevant, y not), MLPs of
                        32-64-64, 50 epochs, Adam 5e-4 (launch/toy2d.py draws Figure 2)
  tiny                  tests and smoke runs
Paper settings: Adam(5e-4, b1 = 0, b2 = 0.9) for every player (the reference's choice; the paper
says Adam with 5e-4; encoder_s has one Adam state for its GM steps and one for its end-to-end
step, as the reference's two optimizers), spectral normalisation in D, n_gm = 3 GM steps per
end-to-end step, lambda_lkd = 0.1, lambda_kl = 10 / N_pixel, lambda_rec = 1 / N_zu,
z_s = z_u = 512 at 64x64 (FaceScrub), batch 96 (reference).
"""

import ml_collections

from latent_jax import configlib

# The preset the cross-family leaderboard (launch/ablation.py --suite=leaderboard) starts
# from; the suite then sets the shared task (synthetic faces, 32 px, Eyeglasses).
LEADERBOARD_PRESET = "synthetic"

PRESETS = ("synthetic", "synthetic_reference", "synthetic_nogan", "identities",
           "identities_reference", "identities_hinge", "identities_nogan", "identities_semi",
           "celeba_identities", "celeba_hair", "toy", "tiny")


def family_config(method: str = "lrlivae") -> ml_collections.ConfigDict:
    c = configlib.base_config()
    c.method = method
    c.batch_size = 96
    c.num_epochs = 100.0
    c.model = ml_collections.ConfigDict(dict(
        compute_dtype="float32",  # or 'bfloat16' (float32 parameters and losses; nets.precision)
        remat=False,  # True: recompute activations in the backward pass (nets.remat)
        z_s_dim=512,                 # dim z_s (reference 512)
        z_u_dim=512,                 # dim z_u (reference 512); the baselines' z has z_s + z_u
        channels=(64, 128, 256, 512),  # conv4x4/2 per entry (encoders and decoder)
        top=1024,                    # the trunks' feature width (reference FC 1024)
        discriminator_channels=(64, 128, 256, 512),
        adversary_hidden=(256,),     # q_omega(c|z_u): FC 256 + ReLU (reference)
        pixel_discriminator=True,    # False: Lr-LiVAE without the GAN extension
        kind="conv",                 # 'conv' (images) or 'mlp' (vectors: the 2-D toy)
        mlp_hidden=(32, 64, 64),     # the MLPs' widths with kind='mlp' (Sec. 4.1)
    ))
    c.loss = ml_collections.ConfigDict(dict(
        lkd=0.1,                     # lambda_lkd (Eq. 9 in the GM steps, Alg. 1 line 25)
        # lambda_lkd of the end-to-end step (line 25) where it differs; None: `lkd` (paper)
        lkd_end_to_end=ml_collections.config_dict.placeholder(float),
        reconstruction=1.0,          # weight of L_rec on encoder_s and the decoder (Alg. 1)
        # lambda_rec, weight of L_rec on encoder_u; None: 1 / N_zu (Sec. 4.2)
        reconstruction_encoder_u=ml_collections.config_dict.placeholder(float),
        kl=ml_collections.config_dict.placeholder(float),  # lambda_kl; None: 10 / N_pixel
        encoder_adversarial=1.0,     # L_E^adv (Alg. 1 line 26)
        generator_adversarial=1.0,   # L_GD^adv (Alg. 1 line 28)
        reconstruction_reduction="half_sum",   # 1/2 ||x - x'||^2 (Alg. 1) or 'mean' (reference)
        kl_reduction="sum",          # over dims (Eq. 3) or 'mean' (reference)
        adversarial="log",           # Eq. 10, or 'hinge' (reference)
        spectral_norm=True,          # D spectrally normalised ([29], reference), either loss
        prior_classes="batch",       # classes of x'_p: the batch's (Alg. 1) or 'random'
        cvae_kl=1.0,                 # cvae: weight of KL (summed over dims) next to L_rec
        # cvaegan (Bao et al. 2017): lambda_1..4 on KL, pairwise feature matching, and the
        # discriminator's and classifier's mean feature matching
        cvaegan_kl=3.0, cvaegan_pairwise=1.0, cvaegan_mean_d=1e-3, cvaegan_mean_c=1e-3,
    ))
    c.train = ml_collections.ConfigDict(dict(
        n_gm=3,                      # GM-only updates per end-to-end update (Alg. 1)
        fresh_batch=True,            # a new batch for the end-to-end update (Alg. 1) or the
                                     # last GM batch (reference)
    ))
    for player in ("encoder_s", "mixture", "encoder_u", "latent_adversary", "decoder",
                   "discriminator", "encoder", "classifier"):
        c.optim[player] = configlib.adam(5e-4, b1=0.0, b2=0.9)
    c.edit = ml_collections.ConfigDict(dict(strength=1.0))
    c.data.name = "synthetic_faces"
    c.data.image_size = 32
    c.data.preprocess = "resize"
    c.data.labels = ("Hair_MULTI",)
    c.checkpoint.every_steps = 500
    c.eval_every_steps = 0
    c.log_every_steps = 25
    return c


def reference_choices(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The reference code's losses, weights and optimizer settings where they differ from the
    paper (Lr-LiVAE.py at ZhilZheng/Lr-LiVAE 2429788).

    - hinge loss (spectral normalisation is on in every preset), prior samples of random
      classes, the last GM batch reused for the end-to-end step;
    - L_rec x10 as a per-element mean on every player, L_kl x1 as a per-dimension mean;
    - L_lkd x1.0 in the end-to-end step (its 10 * mean(likelihood_reg), likelihood_reg
      already x0.1; line 296), x0.1 in the GM steps as in the paper;
    - the precisions' learning rate divided by 10 every 10 of its epochs of iterations
      (lr_ipt, lines 281, 295, 330), the means' kept: here the mixture's `log_var` group,
      every 30 epochs (each of its iterations reads n_gm = 3 batches, an epoch here is
      n_train / (3 batch) iterations), to 1e-10 of the LR by epoch 300.
    Not reproduced: the [-1, 1] pixel range with tanh, the random horizontal flips, the
    softplus precision parametrisation, the VGG16-style networks (docs/methods.md).
    encoder_s's two optimizer states (the reference's id_opt and id_rec_opt) are every
    preset's."""
    c.loss.adversarial = "hinge"
    c.loss.prior_classes = "random"
    c.loss.reconstruction_reduction = "mean"
    c.loss.reconstruction = 10.0
    c.loss.reconstruction_encoder_u = 10.0
    c.loss.kl_reduction = "mean"
    c.loss.kl = 1.0
    c.loss.lkd_end_to_end = 1.0
    c.train.fresh_batch = False
    every = 10 * max(int(c.train.n_gm), 1)
    c.optim.mixture.groups = ml_collections.ConfigDict(dict(log_var=ml_collections.ConfigDict(
        dict(params=("log_var",), schedule=dict(
            kind="piecewise", boundaries_epochs=tuple(every * i for i in range(1, 11)),
            factor=0.1)))))
    return c


def apply_preset(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    if preset in ("synthetic", "synthetic_reference", "synthetic_nogan"):
        c.model.update(dict(z_s_dim=32, z_u_dim=32, channels=(32, 64, 128), top=256,
                            discriminator_channels=(32, 64, 128), adversary_hidden=(128,)))
        c.batch_size = 64
        c.num_epochs = 40.0
        if preset == "synthetic_reference":
            reference_choices(c)
        if preset == "synthetic_nogan":
            c.model.pixel_discriminator = False
    elif preset in ("identities", "identities_reference", "identities_hinge", "identities_nogan",
                    "identities_semi"):
        c = apply_preset(c, "synthetic" if preset in ("identities_hinge", "identities_semi")
                         else preset.replace("identities", "synthetic"))
        if preset == "identities_hinge":
            c.loss.adversarial = "hinge"
        c.data.name = "synthetic_identities"
        c.data.labels = ("Identity",)
        c.data.synthetic.num_identities = 100
        if preset == "identities_semi":
            # Every image of the 100 labelled identities keeps its label (f = 1.0 of the
            # labelable images); the 40 outside identities' images are the unsupervised batches.
            c.data.synthetic.num_unlabeled_identities = 40
            c.data.semi_supervised.fraction = 1.0
    elif preset in ("celeba_identities", "celeba_hair"):
        c.data.image_size = 64
        c.data.preprocess = "center_crop"
        if preset == "celeba_identities":
            c.data.name = "celeb_a_identities"
            c.data.labels = ("Identity",)
            c.data.identities = ml_collections.ConfigDict(dict(
                num_identities=530, validation_fraction=0.1, test_fraction=0.1, seed=0))
        else:
            c.data.name = "celeb_a"
            c.data.labels = ("Hair_MULTI",)
    elif preset == "toy":
        c.data.name = "toy2d"
        c.data.preprocess = "raw"
        c.data.image_size = 2
        c.data.labels = ("Toy_CLASS",)
        c.data.synthetic.update(dict(num_train=3000, num_validation=300, num_test=1000))
        c.data.read_threads = 0
        c.data.prefetch = 0
        c.model.update(dict(kind="mlp", z_s_dim=1, z_u_dim=1, adversary_hidden=(32,)))
        c.batch_size = 64
        c.num_epochs = 50.0
        c.grid_size = 0
        c.evaluate_at_end = False
        c.log_every_steps = 50
    elif preset == "tiny":
        c = apply_preset(c, "synthetic")
        configlib.apply_tiny(c)
        c.data.labels = ("Eyeglasses", "Smiling")     # 4 joint classes
        c.model.update(dict(z_s_dim=4, z_u_dim=4, channels=(8, 16), top=16,
                            discriminator_channels=(8, 16), adversary_hidden=(8,)))
        c.train.n_gm = 2
    else:
        raise ValueError(f"--config: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return c


def get_config(preset: str = "synthetic") -> ml_collections.ConfigDict:
    c = apply_preset(family_config("lrlivae"), preset or "synthetic")
    return configlib.keep_keys_the_method_reads(c)
