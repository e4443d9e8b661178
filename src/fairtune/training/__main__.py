"""``python -m fairtune.training CONFIG``: the entry point ``accelerate launch`` runs on each process."""

from fairtune.cli import app

if __name__ == "__main__":
    import sys

    app(["train", *sys.argv[1:]])
