"""(d) Peak memory of a sweep against K, and the footprint it cannot do without.

The measure is XLA's own accounting of a compiled program: its buffer
assignment, arguments + outputs + temporaries - aliased bytes, the memory the
executable needs at its peak (activations included). For the optax baseline,
which we compile ourselves, ``compiled.memory_analysis()`` gives it. For
``jc.sweep``, whose program is compiled inside the library, a subprocess runs
the sweep with XLA's dump enabled for that module only
(``--xla_dump_hlo_module_re``) and reads ``Total bytes`` from the
``memory-usage-report`` XLA writes; for one and the same program the two
agree to a few hundred bytes.

Process RSS is not used: XLA:CPU's buffers come from the C heap, which keeps
freed pages resident, so the growth of the resident set during a call
measured anything from almost 0 to about the buffer total for the same call.

The theoretical footprint of a sweep of K members is
``K * (params + grads + optimizer state) + data`` (float32 bytes; the data is
shared by all members, never copied per member).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jax

REPO = Path(__file__).resolve().parents[1]


class MemoryPoint(NamedTuple):
    """Peak memory of one sweep of K members, in bytes (None: not measured)."""

    k: int
    theory: int
    ours_xla: int | None
    theirs_xla: int | None


def xla_peak(compiled: Any) -> int | None:
    """Arguments + outputs + temporaries - aliased bytes of a compiled program."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def tree_bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "size"))


def theoretical(k: int, params: Any, state: Any, data: Any) -> int:
    """``K * (params + grads + optimizer state) + data`` in bytes."""
    per_member = 2 * tree_bytes(params) + tree_bytes(state)
    return k * per_member + tree_bytes(data)


def jc_sweep_peaks(problems: list[tuple[str, dict, int]], ks: list[int],
                   timeout: float = 900) -> dict[str, dict[int, int | None]]:
    """XLA's peak bytes of ``jc.sweep``'s program for each problem and K, from
    one subprocess; a problem is ``(problems.PROBLEMS key, kwargs, steps)``."""
    with tempfile.TemporaryDirectory(prefix="jc-bench-dump-") as dump:
        flags = f"--xla_dump_to={dump} --xla_dump_hlo_module_re=.*sweep_program.*"
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        spec = json.dumps({"problems": problems, "ks": list(ks), "dump": dump})
        proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", spec], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"memory subprocess failed:\n{proc.stderr[-3000:]}")
        last = json.loads(proc.stdout.strip().splitlines()[-1])
        return {name: {int(k): v for k, v in per_k.items()} for name, per_k in last.items()}


def _reports(dump: str) -> set[str]:
    return {f for f in os.listdir(dump) if "sweep_program" in f and "memory-usage-report" in f}


def _main(spec: dict) -> dict[str, dict[int, int | None]]:
    import jaxopt_core as jc
    from benchmarks import problems

    seen, out = _reports(spec["dump"]), {}
    for name, kwargs, steps in spec["problems"]:
        problem, out[name] = problems.PROBLEMS[name](**kwargs), {}
        for k in spec["ks"]:
            res = jc.sweep(problem.loss, problem.params, jc.adam, problem.data,
                           grid={"learning_rate": problems.learning_rates(k)}, steps=steps,
                           batch_size=problem.batch_size, key=jax.random.key(0))
            jax.block_until_ready(res.losses)
            new = sorted(_reports(spec["dump"]) - seen)
            seen |= set(new)
            totals = [re.search(r"Total bytes: (\d+)", (Path(spec["dump"]) / n).read_text())
                      for n in new]
            out[name][k] = sum(int(t.group(1)) for t in totals if t) if any(totals) else None
    return out


if __name__ == "__main__":
    print(json.dumps(_main(json.loads(sys.argv[1]))))
