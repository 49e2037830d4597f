"""``python -m jaxopt_core``: the ``jaxopt-core`` command (a sweep by default)."""

from jaxopt_core.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
