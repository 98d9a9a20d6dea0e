"""Reading the outputs of DeepMind's NFNets code stored in ``tests/data/deepmind_nfnets``."""

import json
import pathlib
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from examples.nf_resnet import nfnet_specs

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "deepmind_nfnets"
TINY = ("nfnet_tiny", "nf_resnet_tiny")


class Fixture(NamedTuple):
    """One of DeepMind's tiny networks: its settings, parameters, input and logits."""

    meta: dict[str, Any]
    params: dict[str, dict[str, np.ndarray]]
    x: np.ndarray
    logits: np.ndarray

    @property
    def spec(self) -> nfnet_specs.NFNetSpec:
        """The row of the network DeepMind built, from the constructor settings."""
        meta = self.meta
        if meta["kind"] == "nfnet":
            return nfnet_specs.nfnet_spec(
                meta["spec"], se_ratio=meta["se_ratio"], alpha=meta["alpha"],
                activation=meta["activation"], final_conv_mult=meta["final_conv_mult"],
                use_two_convs=meta["use_two_convs"])
        return nfnet_specs.nf_resnet_spec(meta["depth"], width=meta["width"],
                                          alpha=meta["alpha"], activation=meta["activation"],
                                          use_se=meta["use_se"])

    def flat_params(self) -> dict[str, np.ndarray]:
        """The parameters keyed ``module/param``."""
        return {f"{m}/{p}": v for m, entries in self.params.items() for p, v in entries.items()}


def load(name: str) -> Fixture:
    """Reads ``<name>.json`` and ``<name>.npz``."""
    meta = json.loads((DATA / f"{name}.json").read_text())
    params: dict[str, dict[str, np.ndarray]] = {}
    with np.load(DATA / f"{name}.npz") as archive:
        for key in archive.files:
            if key.startswith("params/"):
                module, _, param = key.removeprefix("params/").rpartition("/")
                params.setdefault(module, {})[param] = archive[key]
        x, logits = archive["x"], archive["logits"]
    return Fixture(meta, params, x, logits)


def variants() -> dict[str, Any]:
    """``deepmind_variants.json``."""
    return json.loads((DATA / "deepmind_variants.json").read_text())


def apply(model: nnx.Module, x: np.ndarray) -> np.ndarray:
    """``model(x)`` under jit, the model's state an argument (not a constant)."""
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x))


def assert_logits_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """max |Δ| ≤ 1e-4 · max(1, max |expected|)."""
    tolerance = 1e-4 * max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(actual - expected).max())
    assert actual.shape == expected.shape and error <= tolerance, (error, tolerance)
