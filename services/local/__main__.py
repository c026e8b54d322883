"""`python -m services.local ...` is the `hami` command."""

from services.local.cli import main

main()
