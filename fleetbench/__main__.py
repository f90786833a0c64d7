"""``python -m fleetbench`` runs the command-line interface."""

from fleetbench._cli import main

main()
