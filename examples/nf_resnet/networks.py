"""Every network the NF-ResNet example trains, built by name (``--model``).

DeepMind's NFNet-F0…F7 and NF-ResNet-50…200 (:mod:`~examples.nf_resnet.nfnet`), the small
NF-ResNets (:mod:`~examples.nf_resnet.models`) and the BatchNorm ResNets
(:mod:`~examples.nf_resnet.bn_resnet`) that they are compared with.
"""

from flax import nnx

from examples.common import devices, errors
from examples.nf_resnet import bn_resnet, checkpoint_init, models, nfnet, nfnet_specs
from examples.nf_resnet.configs import MODEL_CHOICES, TrainConfig


def create_model(config: TrainConfig, num_classes: int, in_features: int,
                 rngs: nnx.Rngs) -> nnx.Module:
    """Builds the configured network (float32 parameters, configured compute dtype).

    ``config.model`` picks it: ``nfnet_f*`` and ``nf_resnet_{50,101,152,200}`` DeepMind's
    networks (:mod:`~examples.nf_resnet.nfnet`, their rows in
    :data:`~examples.nf_resnet.nfnet_specs.VARIANTS`), the other ``nf_resnet_*`` the small
    NF-ResNets, ``bn_resnet_*`` the BatchNorm ResNets. With ``config.init_from`` the
    parameters start from that directory's newest checkpoint
    (:func:`~examples.nf_resnet.checkpoint_init.initialize_from`).
    """
    if config.model in nfnet_specs.VARIANTS:
        model = create_deepmind_model(config, num_classes, in_features, rngs)
    elif config.model in models.VARIANTS:
        model = create_resnet(config, num_classes, in_features, rngs)
    else:
        raise ValueError(f"Unknown model {config.model!r}; choose from {MODEL_CHOICES}.")
    if config.init_from is not None:
        checkpoint_init.initialize_from(model, config.init_from)
    return model


def create_deepmind_model(config: TrainConfig, num_classes: int, in_features: int,
                          rngs: nnx.Rngs) -> nfnet.NFNet:
    """Builds a row of ``nfnet_specs.VARIANTS``; its activation and SE come from the row.

    The regularisers (``drop_path_rate``, ``dropout_rate``) are the config's, as for
    every model: the row's paper values are for presets to copy.

    Raises:
      UserError: ``--activation`` or ``--se-ratio`` is set, which the row fixes.
    """
    defaults = TrainConfig()
    for name in ("activation", "se_ratio"):
        if getattr(config, name) != getattr(defaults, name):
            raise errors.UserError(
                f"{errors.flag(name)} {getattr(config, name)!r}: --model {config.model} fixes "
                f"it (its row in examples.nf_resnet.nfnet_specs.VARIANTS); leave it unset.")
    return nfnet.NFNet(nfnet_specs.VARIANTS[config.model], num_classes,
                       in_features=in_features, drop_path_rate=config.drop_path_rate,
                       dropout_rate=config.dropout_rate,
                       dtype=devices.compute_dtype(config.dtype), rngs=rngs)


def create_resnet(config: TrainConfig, num_classes: int, in_features: int,
                  rngs: nnx.Rngs) -> models.ResNet:
    """Builds a small NF-ResNet or a BatchNorm ResNet (a row of ``models.VARIANTS``)."""
    spec = models.VARIANTS[config.model]
    common = dict(in_features=in_features, activation=config.activation,
                  se_ratio=config.se_ratio, drop_path_rate=config.drop_path_rate,
                  dropout_rate=config.dropout_rate,
                  dtype=devices.compute_dtype(config.dtype), rngs=rngs)
    if spec.normalization == "batch":
        return bn_resnet.BNResNet(spec, num_classes, **common)
    return models.NFResNet(spec, num_classes, **common)
