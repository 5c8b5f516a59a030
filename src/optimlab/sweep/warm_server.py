"""Imported by the warm workers' fork server only (its preload), never by the sweep's own process.

The server applies the command line's OpenMP defaults (`optimlab.cli.thread_defaults`) before torch loads,
imports everything a run needs (optimlab.sweep.warm_child), does once the set-up every run would otherwise
repeat after its fork (`warm_child.prime`), and ignores SIGTERM: a SIGTERM sent to the sweep's whole process
group must reach the runs (which checkpoint and exit 75) without killing the server, which would lose their
exit codes. The server still exits when the sweep process does (multiprocessing closes its "alive" pipe);
each forked run restores SIGTERM's default first thing.

Last, `gc.freeze()` moves the server's objects (about 300,000 after importing torch) into the garbage
collector's permanent generation. Without it, each full collection in a forked run walks all of them,
which costs a few tenths of a second and writes to every page holding one, so copy-on-write copies those
pages into the run (the pattern the `gc.freeze` documentation describes for servers that fork).

When the sweep process exits, the server's loop ends (SystemExit) and the server ends at its first atexit
handler, with `os._exit`: the interpreter's teardown, with torch loaded, takes about a second, and the
server holds the sweep's stdout and stderr, so a caller reading them to their end would wait that long.
Forked runs never run atexit handlers (multiprocessing ends them with `os._exit` too).
"""

import atexit
import gc
import os
import signal

from optimlab.cli import thread_defaults

thread_defaults()  # OpenMP's wait policy, read when torch loads, as `optimlab train` sets it in a fresh process

import optimlab.sweep.warm_child  # noqa: E402

optimlab.sweep.warm_child.prime()

signal.signal(signal.SIGTERM, signal.SIG_IGN)
gc.freeze()
atexit.register(os._exit, 0)
