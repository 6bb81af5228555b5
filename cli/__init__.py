"""The ``seqcore`` command line (installed as the package ``seqcore_cli``).

``seqcore_cli.main.main`` is the click group behind the ``seqcore`` console script; see
``docs/cli.md`` for the commands.
"""
