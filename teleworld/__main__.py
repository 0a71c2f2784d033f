"""`python -m teleworld` is the `teleworld` command."""

from teleworld.cli import main

main()
