"""Walks a jaxpr, and the jaxprs nested in it, with the rules of :mod:`._jaxpr_rules`.

Calls (``jit``, ``remat``/``checkpoint``, ``custom_jvp_call``,
``custom_vjp_call`` and any other primitive carrying one jaxpr with matching
inputs and outputs) are walked inside with their operands' states. ``scan``
slices its scanned-over inputs (their leading axis becomes a layer axis of the
parameters it comes from), and ``scan`` and ``while`` carries are iterated to a
fixed point. ``cond`` joins its branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jax.extend import core

from agc_optax import _compat, _jaxpr_rules
from agc_optax._jaxpr_state import DATA, Recorder, State, carries_params, join, settle, shape_of

_MAX_FIXPOINT_ROUNDS = 8


def _open(jaxpr: Any) -> Any:
    return jaxpr.jaxpr if isinstance(jaxpr, core.ClosedJaxpr) else jaxpr


def walk(rec: Recorder, jaxpr: Any, in_states: Sequence[State], where: str = "") -> list[State]:
    """Output states of ``jaxpr`` given its inputs' states, recording parameter reads.

    Args:
        rec: where parameter reads and layer axes are recorded.
        jaxpr: a ``Jaxpr`` or ``ClosedJaxpr``; its constants are constants.
        in_states: one state per input variable.
        where: the enclosing primitives, for the notes.

    Returns:
        One state per output variable.
    """
    jaxpr = _open(jaxpr)
    env: dict[Any, State] = dict.fromkeys(jaxpr.constvars)
    env.update(zip(jaxpr.invars, in_states, strict=True))

    def read(var: Any) -> State:
        return None if isinstance(var, core.Literal) else env[var]

    for eqn in jaxpr.eqns:
        outs = _eqn(rec, eqn, [read(v) for v in eqn.invars], where)
        for var, state in zip(eqn.outvars, outs, strict=True):
            if not isinstance(var, _compat.DropVar):
                env[var] = state
    return [read(v) for v in jaxpr.outvars]


def _transposed(eqn: Any) -> bool:
    """Whether ``eqn`` belongs to a backward pass (``jax.grad`` inside the forward pass)."""
    return any(type(s).__name__ == "Transform" and s.name == "transpose"
               for s in eqn.source_info.name_stack.stack)


def reads_data(jaxpr: Any, last_states: Sequence[State]) -> bool:
    """Whether ``jaxpr`` uses any of its last inputs whose state is :data:`DATA`."""
    inputs = jaxpr.invars[len(jaxpr.invars) - len(last_states):]
    data = {var for var, state in zip(inputs, last_states, strict=True) if state is DATA}
    used = [*(var for eqn in jaxpr.eqns for var in eqn.invars), *jaxpr.outvars]
    return any(var in data for var in used if not isinstance(var, core.Literal))


def _eqn(rec: Recorder, eqn: Any, states: list[State], where: str) -> list[State]:
    if not carries_params(states):
        return [DATA if any(s is DATA for s in states) else None] * len(eqn.outvars)
    backward = _transposed(eqn)
    rec.muted += backward
    try:
        return _follow(rec, eqn, states, where)
    finally:
        rec.muted -= backward


def _follow(rec: Recorder, eqn: Any, states: list[State], where: str) -> list[State]:
    name = eqn.primitive.name
    where = f"{where}/{name}" if where else name
    if name in ("scan", "while", "cond"):
        states = settle(rec, states)  # Selections do not enter loops or branches.
    if name == "scan":
        return _scan(rec, eqn, states, where)
    if name == "while":
        return _while(rec, eqn, states, where)
    if name == "cond":
        return _cond(rec, eqn, states, where)
    inner = [v for v in eqn.params.values() if isinstance(v, core.Jaxpr | core.ClosedJaxpr)]
    if len(inner) == 1 and _same_signature(eqn, _open(inner[0])):
        return walk(rec, inner[0], states, where)
    return _jaxpr_rules.apply(rec, eqn, states, where)


def _same_signature(eqn: Any, body: Any) -> bool:
    """Whether ``body`` takes and returns values of the equation's ranks (a plain call)."""
    pairs = [*zip(eqn.invars, body.invars, strict=False),
             *zip(eqn.outvars, body.outvars, strict=False)]
    return (len(body.invars) == len(eqn.invars) and len(body.outvars) == len(eqn.outvars)
            and all(len(shape_of(a)) == len(shape_of(b)) for a, b in pairs))


def _fixpoint(rec: Recorder, body: Any, before: list[State], carry: list[State],
              after: list[State], where: str) -> tuple[list[State], list[State]]:
    """Walks a loop body until its carry states stop changing.

    Args:
        rec: the recorder.
        body: the loop body; inputs ``before + carry + after``, carry outputs first.
        before: the states of the inputs before the carry (constants of the loop).
        carry: the carry states on entry.
        after: the states of the inputs after the carry (a scan's sliced inputs).
        where: the loop's location.

    Returns:
        The carry states at the fixed point and the states of the other outputs.
    """
    outs: list[State] = []
    for _ in range(_MAX_FIXPOINT_ROUNDS):
        outs = settle(rec, walk(rec, body, [*before, *carry, *after], where))
        joined = [join(c, o) for c, o in zip(carry, outs, strict=False)]
        if joined == carry:
            break
        carry = joined
    else:
        carry = [DATA if s is not None else None for s in carry]
        outs = settle(rec, walk(rec, body, [*before, *carry, *after], where))
    return carry, outs[len(carry):]


def _scan(rec: Recorder, eqn: Any, states: list[State], where: str) -> list[State]:
    p = eqn.params
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, carry = states[:n_consts], states[n_consts:n_consts + n_carry]
    sliced: list[State] = []
    for state in states[n_consts + n_carry:]:
        if isinstance(state, dict):
            for param, axis_map in state.items():
                rec.layer(param, axis_map[0], "scanned over")
            state = {param: axis_map[1:] for param, axis_map in state.items()}
        sliced.append(state)
    carry, ys = _fixpoint(rec, p["jaxpr"], consts, carry, sliced, where)
    stacked = [
        {q: (frozenset(), *m) for q, m in y.items()} if isinstance(y, dict) else y for y in ys
    ]
    return [*carry, *stacked]


def _while(rec: Recorder, eqn: Any, states: list[State], where: str) -> list[State]:
    p = eqn.params
    n_cond, n_body = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts = states[:n_cond], states[n_cond:n_cond + n_body]
    carry, _ = _fixpoint(rec, p["body_jaxpr"], body_consts, states[n_cond + n_body:], [],
                         where)
    walk(rec, p["cond_jaxpr"], [*cond_consts, *carry], where)
    return carry


def _cond(rec: Recorder, eqn: Any, states: list[State], where: str) -> list[State]:
    outs: list[State] | None = None
    for branch in eqn.params["branches"]:
        branch_outs = settle(rec, walk(rec, branch, states[1:], where))
        outs = branch_outs if outs is None else [
            join(a, b) for a, b in zip(outs, branch_outs, strict=True)]
    return outs or []
