"""Servers the lab stops with SIGINT take it, however they were started.

A process started with SIGINT ignored passes that on to what it starts, and
Python keeps an ignored SIGINT instead of raising KeyboardInterrupt: a shell
script's `make run &` starts it so (a non-interactive shell ignores SIGINT
in its background jobs), as do some job runners. Dagster then maps SIGTERM
to SIGINT's handler, so its code server ignored both, and every such make run
waited out both graces (15 s) before it killed the server. The servers run
in sessions of their own, out of reach of a terminal's Ctrl-C, so taking
SIGINT back in them changes nothing else.
"""

from __future__ import annotations

import signal


def take_interrupts() -> None:
    """SIGINT raises KeyboardInterrupt here, as in a process started the usual way (main thread only)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
