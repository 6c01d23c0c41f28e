"""`python -m gateway` is the `tanji` command."""

from gateway.cli import main

main()
