"""Frontends: what turns a user's description of Φ into IR. The YAML spec frontend is ``spec.py``
(validation) + ``build.py`` (lowering); ``fx.py`` traces a user's own ``nn.Module``. Both meet the
compiler at ``program.make_program``."""
