"""``python -m mirflow`` runs the command line."""

from .cli import main

main()
