"""Sub-commands of ``sigma-pyro``: one module each, exposing ``register(subparsers)`` that
adds its parser and sets ``handler`` to the function running it."""

COMMANDS = (
    "train",
    "evaluate",
    "recommend",
    "interests",
    "bench",
    "compare",
    "diagnose",
    "results",
    "tune",
)
