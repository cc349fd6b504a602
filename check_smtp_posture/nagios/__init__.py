"""The plugin contract: what Nagios, Icinga 2 and NRPE see of a plugin.

Arguments and usage errors (cli), the four states and their names (states),
Contexts that decide a state from a fact (contexts), the status line's words
(summary), one run within -t printed as the family promises (runner), the
warning policy that keeps library noise out of that output (warningpolicy),
and the state a plugin keeps between runs in nagiosplugin's Cookie (statefile).
These modules and the plugins are the only importers of nagiosplugin
(tests/test_layers.py).
"""
