"""A trained amortized guide and what it needs to be saved, checked and rebuilt.

A :class:`Guide` belongs to one model: it records the feature names and latent
size it was trained for, how its network is built (so :mod:`vaequery.io` can
read its weights back without pickle), how it was trained, and the network.
Models keep their guides in ``VAE.guides`` by name:

``"posterior_matching"``
    A :class:`~vaequery.guides.PartialEncoder` trained with posterior matching.
``"decoder_only"``
    A :class:`~vaequery.guides.PartialEncoder` trained on the decoder's own samples.
``"retuned_encoder"``
    A copy of the model's encoder fine-tuned on masked rows, decoder frozen.
``"lookahead"``
    A :class:`~vaequery.guides.LookaheadNetwork` (posterior matching's eq. 7)
    trained against a frozen Gaussian partial encoder, for feature acquisition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The kinds of guide vaequery trains, and the function that trains each.
KINDS = {
    "posterior_matching": "vaequery.guides.train_posterior_matching",
    "decoder_only": "vaequery.guides.train_decoder_only",
    "retuned_encoder": "vaequery.guides.train_retuned_encoder",
    "lookahead": "vaequery.guides.train_lookahead",
}


@dataclass
class Guide:
    """A trained amortized network that belongs to a model.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    network : equinox.Module
        :class:`~vaequery.guides.PartialEncoder`, :class:`~vaequery.decoder.MLPEncoder`
        or :class:`~vaequery.guides.LookaheadNetwork`.
    features : list of str
        Feature names (in order) of the model it was trained for.
    latent_dim : int
    architecture : dict
        Constructor arguments that rebuild ``network``'s skeleton.
    info : dict
        Training record (steps, seconds, validation loss, mask distribution...).
    """

    kind: str
    network: object
    features: list
    latent_dim: int
    architecture: dict
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        head = self.architecture.get("head")
        extra = f", head={head!r}" if head else ""
        return (
            f"Guide(kind={self.kind!r}{extra}, features={len(self.features)}, "
            f"latent_dim={self.latent_dim})"
        )

    def __getstate__(self):
        # pickle through the project's own format (architecture + serialised
        # array leaves), never the network object: it may hold functions
        import io

        import equinox as eqx

        buf = io.BytesIO()
        eqx.tree_serialise_leaves(buf, self.network)
        state = {k: v for k, v in self.__dict__.items() if k != "network"}
        return {**state, "weights": buf.getvalue()}

    def __setstate__(self, state):
        import io

        from vaequery._leaves import read_leaves

        state = dict(state)
        weights = state.pop("weights")
        self.__dict__.update(state)
        self.network = read_leaves(io.BytesIO(weights), build_network(self.architecture))

    def check_compatible(self, model, name=None):
        """Raise ``ValueError`` unless the guide was trained for ``model``'s features."""
        label = name or self.kind
        if list(self.features) != list(model.feature_names) or self.latent_dim != model.latent_dim:
            raise ValueError(
                f"guide {label!r} was trained for features {self.features} with latent_dim "
                f"{self.latent_dim}; this model has features {model.feature_names} and "
                f"latent_dim {model.latent_dim}. Retrain it with "
                f"{KINDS.get(self.kind, 'its trainer')}"
            )


#: Guide network classes that register themselves (:func:`register_network`), so that
#: this module need not import the modules that define them (e.g. the lookahead
#: network, which imports the backends that import this module).
_NETWORKS: dict = {}


def register_network(cls):
    """Let :func:`build_network` rebuild guides whose network is ``cls``.

    Parameters
    ----------
    cls : type
        An equinox module whose constructor takes the guide's ``architecture``
        record (less ``"class"``) as keyword arguments.

    Returns
    -------
    type
        ``cls`` (usable as a class decorator).
    """
    _NETWORKS[cls.__name__] = cls
    return cls


def build_network(architecture: dict):
    """Rebuild a guide network's skeleton from its ``architecture`` record.

    Parameters
    ----------
    architecture : dict
        :attr:`Guide.architecture`: ``"class"`` and the constructor's arguments.

    Returns
    -------
    equinox.Module
        The network's structure with :class:`jax.ShapeDtypeStruct` leaves
        (see :func:`vaequery.decoder.skeleton`): no initialiser is run, the
        weights are read over it with :func:`equinox.tree_deserialise_leaves`.
    """
    from vaequery.decoder import MLPEncoder, skeleton
    from vaequery.guides.networks import PartialEncoder

    arch = dict(architecture)
    cls = arch.pop("class")
    if cls == "PartialEncoder":
        return skeleton(PartialEncoder, **arch)
    if cls in _NETWORKS:
        return skeleton(_NETWORKS[cls], **arch)
    if cls == "MLPEncoder":
        return skeleton(MLPEncoder, arch["num_features"], arch["latent_dim"], tuple(arch["hidden"]))
    raise ValueError(f"unknown guide network class {cls!r}")
