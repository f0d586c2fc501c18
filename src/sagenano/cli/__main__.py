"""`python -m sagenano.cli`: the `sage-nano` command."""

from . import main

main()
