"""A few AGC training steps of a small MLP, in one process or across several.

``tests/examples/test_multihost.py`` starts this script twice with ``--process-id 0``
and ``--process-id 1`` (plus once with ``--reference``). The distributed runs
join through ``jax.distributed.initialize`` on 127.0.0.1 with gloo CPU
collectives, shard a global batch over one CPU device per process, and keep the
kernels FSDP-sharded along their fan-in axis, so AGC's per-unit norms are
summed across processes. Each run writes its final parameters (gathered to
full arrays), its replicated leaves as the process holds them, the clip
fractions per step and the collectives of the compiled AGC update to ``--out``
(an ``.npz`` plus a ``.json``). By hand::

    python tests/helpers/multihost_train.py --coordinator 127.0.0.1:12345 \\
        --num-processes 2 --process-id 0 --out /tmp/p0 &
    python tests/helpers/multihost_train.py --coordinator 127.0.0.1:12345 \\
        --num-processes 2 --process-id 1 --out /tmp/p1
    python tests/helpers/multihost_train.py --reference --out /tmp/ref
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agc_optax import agc  # noqa: E402
from tools import hlo_collectives  # noqa: E402

GLOBAL_BATCH = 16
LAYERS = ((8, 32), (32, 32), (32, 4))  # (fan-in, units) of each Dense layer.
CLIPPING = 0.02  # Small enough that the first steps clip (checked by the test).


def init_params(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        f"dense{i}": {
            "kernel": rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, units)).astype(np.float32),
            "bias": np.zeros(units, np.float32),
        }
        for i, (fan_in, units) in enumerate(LAYERS)
    }


def global_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The same global batch in every process: inputs and regression targets."""
    rng = np.random.default_rng(1000 + step)
    x = rng.normal(size=(GLOBAL_BATCH, LAYERS[0][0])).astype(np.float32)
    y = np.sin(3 * x[:, : LAYERS[-1][1]]).astype(np.float32)
    return x, y


def param_specs(params: Any) -> Any:
    """FSDP: every kernel split along its fan-in axis over "data"; biases replicated."""
    return {name: {"kernel": P("data", None), "bias": P()} for name in params}


def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    h = x
    for i in range(len(LAYERS)):
        layer = params[f"dense{i}"]
        h = h @ layer["kernel"] + layer["bias"]
        if i < len(LAYERS) - 1:
            h = jax.nn.relu(h)
    return jnp.mean((h - y) ** 2)


def optimizer() -> optax.GradientTransformation:
    return optax.chain(agc(CLIPPING, track_stats=True), optax.sgd(0.1, momentum=0.9))


def train(steps: int) -> dict[str, Any]:
    """Trains on every device JAX sees (across processes once distributed is up)."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    shardings = jax.tree.map(
        lambda spec: NamedSharding(mesh, spec), param_specs(init_params()), is_leaf=_is_spec
    )
    # Every process holds the same full initial values; each keeps its shards.
    params = jax.tree.map(
        lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
        init_params(),
        shardings,
    )
    tx = optimizer()
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        grads = jax.grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rows = GLOBAL_BATCH // jax.process_count()
    first = jax.process_index() * rows
    clip_fractions = []
    for step in range(steps):
        x, y = global_batch(step)
        # Each process feeds only its own rows of the global batch.
        x, y = (
            jax.make_array_from_process_local_data(batch_sharding, a[first : first + rows])
            for a in (x, y)
        )
        params, opt_state = train_step(params, opt_state, x, y)
        clip_fractions.append(float(optax.tree_utils.tree_get(opt_state, "clip_fraction")))

    # What AGC alone sends between processes, read from its compiled HLO.
    agc_only = agc(CLIPPING)
    update_hlo = (
        jax.jit(lambda g, p: agc_only.update(g, optax.EmptyState(), p)[0])
        .lower(params, params)
        .compile()
        .as_text()
    )
    collectives = hlo_collectives.parse_collectives(update_hlo)
    return {
        "params": multihost_utils.process_allgather(params, tiled=True),
        "local_biases": {name: np.asarray(layer["bias"]) for name, layer in params.items()},
        "clip_fractions": clip_fractions,
        "agc_collectives": [str(op) for op in collectives],
        "agc_collective_kinds": sorted({op.kind for op in collectives}),
        "agc_largest_operand": max((s.size for op in collectives for s in op.operands), default=0),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }


def _is_spec(x: Any) -> bool:
    return isinstance(x, P)


def save(result: dict[str, Any], out: Path) -> None:
    arrays = {
        f"params/{name}/{leaf}": np.asarray(value)
        for name, layer in result["params"].items()
        for leaf, value in layer.items()
    }
    arrays.update({f"local_biases/{name}": v for name, v in result["local_biases"].items()})
    np.savez(out.with_suffix(".npz"), **arrays)
    summary = {k: v for k, v in result.items() if k not in ("params", "local_biases")}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--reference", action="store_true", help="one process, no distributed")
    parser.add_argument("--init-timeout", type=int, default=60, help="seconds to wait for peers")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = parser.parse_args(argv)

    if not args.reference:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.init_timeout,
        )
    save(train(args.steps), args.out)
    if not args.reference:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
