"""Subcommands registered by optional parts of neurocert (one module per family).

Each module here imports :func:`neurocert.cli.register` and registers its
subcommands at import time; :func:`neurocert.cli.build_parser` imports every
module of this package. Modules must import heavy optional packages (torch,
pandas, playwright, dask) inside the command function, never at module level,
so that ``neurocert --help`` stays fast and works without the extras.
"""
