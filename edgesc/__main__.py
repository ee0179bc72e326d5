"""``python -m edgesc`` (also what ``torchrun -m edgesc train ...`` runs)."""
from edgesc.cli import main

main()
