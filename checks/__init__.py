"""Built-in checks, one module per concept (an area may have several: network.py,
network_tcp.py...). Each module declares checks with @check; sub-packages are not scanned.

To add a check, copy a small one (cpu.py is a good start): declare it, read facts
through the context (so tests can point it at a fixture tree), judge them in a pure
function, return a Result with findings that say what to do.
"""
