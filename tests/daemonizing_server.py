#!/usr/bin/env python3
"""A misbehaving server: it daemonizes a sleeper the classic way (fork, setsid, fork; the middle process
exits, so the sleeper is in its own session and process group and has lost its parent; its stdio is
closed) which adds its pid as a line to $DAEMON_PIDFILE, then becomes koboldcpp's stand-in (fake_koboldcpp.py)
with the same arguments.  `daemonizing_server.py --then ARGS...` runs `python ARGS...` instead, and with
no ARGS exits at once (a launcher that leaves only its daemon behind)."""

import os
import sys
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        fd = os.open(os.environ["DAEMON_PIDFILE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{os.getpid()}\n".encode())  # one line per daemon, in one write
        os.close(fd)
        time.sleep(300)
    os._exit(0)
print("daemonized", flush=True)
if sys.argv[1:2] == ["--then"]:
    if len(sys.argv) > 2:
        os.execv(sys.executable, [sys.executable] + sys.argv[2:])
    sys.exit(0)
os.execv(sys.executable, [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_koboldcpp.py")]
         + sys.argv[1:])
