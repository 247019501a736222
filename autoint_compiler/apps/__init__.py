"""Applications built on compiled AutoInt networks.

* :mod:`autoint_compiler.apps.oned` -- 1-D signals with exact antiderivatives (``train-1d``).
* :mod:`autoint_compiler.apps.ct` -- sparse-view CT sinogram interpolation (``ct``).

Each module exposes ``add_parser(subparsers)`` registering its CLI subcommand.
"""
