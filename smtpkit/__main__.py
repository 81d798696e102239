"""``python -m smtpkit``: the same as the ``smtpkit`` command."""

from smtpkit.commands import main

main()
