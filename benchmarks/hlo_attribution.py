"""Where jc.sweep's step costs more than the hand-written sweep's, without a clock (issue 14).

Counts the instructions of the compiled loop body (the ``while`` body of the
optimized HLO, ``compiled.as_text()``) of one training step, K members of
the digits MLP (64-32-10, minibatches of 128), Adam:

* ``optax``: the hand-written baseline of ``benchmarks.sweep_speed`` without
  evaluations (``inject_hyperparams`` + ``vmap`` + ``scan``);
* ``optax + guard``: the same, each member's step wrapped in jc's
  ``guarded_step`` with the sweep's check (finiteness of the loss, params and optimizer state, the
  ``where`` selects of the ``alive`` flag, ``diverged_at``);
* ``jc tree`` / ``jc flat``: ``jc.sweep``'s own program (captured from a call),
  tree and flat layout; ``jc flat + eval``: with ``eval_fn`` every 10 steps.

Top-level instructions of the body are counted by opcode (a fusion is one
kernel; its ``kind`` is given), plus the gathers, reductions and
``dynamic-update-slice``s inside the fused computations the body calls.
With ``--memory`` it also prints XLA's memory accounting of jc.sweep's
program at K=1024 over 10,000 steps with per-step losses and with
``log_every=100``. Usage: ``python benchmarks/hlo_attribution.py [K] [--smoke] [--memory]``.
"""

from __future__ import annotations

import collections
import contextlib
import re
import sys
from pathlib import Path
from unittest import mock

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import jaxopt_core as jc  # noqa: E402
import jaxopt_core.training.sweep_run as sweep_module  # noqa: E402
from benchmarks.problems import digits_mlp, learning_rates  # noqa: E402
from benchmarks.sweep_speed import epoch_orders  # noqa: E402
from jaxopt_core.training.divergence import guarded_step  # noqa: E402

_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = \S+ ([\w\-]+)\(")


def computations(hlo: str) -> dict[str, list[str]]:
    """``{name: [instruction lines]}`` of an HLO module's text."""
    out, name = {}, None
    for line in hlo.splitlines():
        m = _COMP.match(line)
        if m and not line.startswith(" "):
            name = m.group(1)
            out[name] = []
        elif name is not None and line.strip() and line.strip() != "}":
            out[name].append(line)
    return out


def _opcode(line: str) -> str | None:
    m = _INSTR.match(line)
    return m.group(1) if m else None


def body_counts(hlo: str) -> collections.Counter:
    """Opcode counts of the largest ``while`` body (the step loop), fusions by
    kind, and ``inner:<op>`` for ops inside the fusions it calls."""
    comps = computations(hlo)
    bodies = [m.group(1) for line in hlo.splitlines() for m in [re.search(r"body=%?([\w.\-]+)",
                                                                          line)] if m]
    body = max(bodies, key=lambda b: len(comps.get(b, [])))
    counts = collections.Counter()

    def visit(name, top):
        for line in comps.get(name, []):
            op = _opcode(line)
            if op is None:
                continue
            if top:
                kind = re.search(r"kind=(k\w+)", line)
                counts[f"fusion:{kind.group(1)}" if op == "fusion" and kind else op] += 1
            elif op in ("gather", "reduce", "dynamic-update-slice", "dynamic-slice", "dot",
                        "select", "scatter", "is-finite"):
                counts[f"inner:{op}"] += 1
            for called in re.findall(r"(?:calls|to_apply|body|condition|branch_computations)="
                                     r"\{?%?([\w.\-]+)", line):
                if called in comps and op != "reduce":
                    visit(called, top and op in ("call",))

    visit(body, True)
    return counts


def _optax_program(problem, steps, guard: bool):
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)

    def run(params, data, lrs, key):
        def init(lr):
            s = opt.init(params)
            s.hyperparams["learning_rate"] = lr
            return params, s, jnp.array(True)

        def member(c, batch):
            p, s, alive = c
            if guard:
                p, s, alive, loss = guarded_step(problem.loss, opt, p, s, alive, batch)
                return (p, s, alive), loss
            loss, g = jax.value_and_grad(problem.loss)(p, batch)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s, alive), loss

        orders = epoch_orders(key, data[0].shape[0], problem.batch_size, steps)
        step = jax.vmap(member, in_axes=(0, None))

        def body(c, idx):
            return step(c, jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data))

        c, losses = jax.lax.scan(body, jax.vmap(init)(lrs), orders)
        return c[0], losses.T

    return jax.jit(run)


def _jc_compiled(problem, lrs, steps, key, **kw):
    """The program ``jc.sweep`` compiles for these arguments, compiled again here."""
    captured = {}
    real = sweep_module.sweep_program

    class Captured(Exception):
        pass

    def spy(*args, **kwargs):  # capture the arguments; do not run the sweep
        captured["call"] = (args, kwargs)
        raise Captured

    with mock.patch.object(sweep_module, "sweep_program", spy), contextlib.suppress(Captured):
        jc.sweep(problem.loss, problem.params, jc.adam, problem.data,
                 grid={"learning_rate": lrs}, steps=steps, batch_size=problem.batch_size,
                 key=key, **kw)
    args, kwargs = captured["call"]
    return real.lower(*args, **kwargs).compile()


def _jc_hlo(problem, lrs, steps, key, **kw) -> str:
    return _jc_compiled(problem, lrs, steps, key, **kw).as_text()


def thinning_memory(k: int = 1024, steps: int = 10_000, every: int = 100) -> dict:
    """XLA's accounting (MB) of jc.sweep's MLP program, per-step losses vs ``log_every``."""
    problem, key = digits_mlp(), jax.random.key(0)
    out = {}
    for name, kw in (("every step", {}), (f"log_every={every}", {"log_every": every})):
        m = _jc_compiled(problem, learning_rates(k), steps, key, **kw).memory_analysis()
        out[name] = {"output MB": m.output_size_in_bytes / 1e6,
                     "temp MB": m.temp_size_in_bytes / 1e6,
                     "total MB": (m.argument_size_in_bytes + m.output_size_in_bytes
                                  + m.temp_size_in_bytes - m.alias_size_in_bytes) / 1e6}
    return out


def attribution(k: int = 256, steps: int = 20, hidden: int = 32) -> dict[str, collections.Counter]:
    problem = digits_mlp(hidden=hidden)
    lrs, key = learning_rates(k), jax.random.key(0)
    args = (problem.params, problem.data, jnp.asarray(lrs), key)
    out = {}
    for name, guard in (("optax", False), ("optax + guard", True)):
        out[name] = body_counts(_optax_program(problem, steps, guard).lower(*args).compile()
                                .as_text())
    out["jc tree"] = body_counts(_jc_hlo(problem, lrs, steps, key, layout="tree"))
    out["jc flat"] = body_counts(_jc_hlo(problem, lrs, steps, key, layout="flat"))
    out["jc flat + eval"] = body_counts(_jc_hlo(problem, lrs, steps, key, layout="flat",
                                                eval_fn=problem.loss, eval_data=problem.data,
                                                eval_every=steps // 10))
    return out


def markdown(table: dict[str, collections.Counter]) -> str:
    names = list(table)
    ops = sorted(set().union(*table.values()), key=lambda o: (o.startswith("inner:"), o))
    lines = ["| op | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {op} | " + " | ".join(str(table[n].get(op, 0)) for n in names) + " |"
              for op in ops]
    top = {n: sum(v for o, v in c.items() if not o.startswith("inner:")) for n, c in table.items()}
    lines.append("| **top-level total** | " + " | ".join(str(top[n]) for n in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    smoke = "--smoke" in sys.argv
    rest = [a for a in sys.argv[1:] if not a.startswith("--")]
    k = int(rest[0]) if rest else (4 if smoke else 256)
    if "--memory-only" not in sys.argv:
        print(markdown(attribution(k, steps=10 if smoke else 20, hidden=8 if smoke else 32)))
    if "--memory" in sys.argv or "--memory-only" in sys.argv:
        print(thinning_memory())
