"""The lab: real servers (nsd, Postfix, ...) and scripted misbehaving ones, on loopback.

Every server is started by the tests (or `make demo`) with its own
configuration in its own directory, on addresses in 127.0.25.0/24 and
friends, never on 127.0.0.1:25.
"""
