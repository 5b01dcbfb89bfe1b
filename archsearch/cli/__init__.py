"""The command line: the only package that imports hydra or omegaconf.

Importing it registers the settings classes' defaults with Hydra (:mod:`archsearch.cli.defaults`),
so every entry point and every ``compose`` sees the same, single set of defaults.
"""

from archsearch.cli.defaults import register_defaults

register_defaults()
