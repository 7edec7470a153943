"""`python -m tensorsmith` (and `torchrun -m tensorsmith`): the command line."""

from tensorsmith.cli import main

main()
