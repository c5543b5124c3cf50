#!/usr/bin/env python3
"""A stand-in for mmdebstrap in template tests: fast, offline, observable.

Writes a tiny root (``etc/``, a python3 symlink, a setuid file, a file with a
capability, two hard links, a file owned by uid 42) into the target, printing
mmdebstrap's phase lines. Appends one line to $FAKE_MMDEBSTRAP_COUNTER per run, sleeps
$FAKE_MMDEBSTRAP_SLEEP seconds in the middle, and fails when $FAKE_MMDEBSTRAP_FAIL is
set. Writes its pid to $FAKE_MMDEBSTRAP_PIDFILE if set.
"""

import os
import struct
import sys
import time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
suite, target = args[0], args[1]
with open(os.environ["FAKE_MMDEBSTRAP_COUNTER"], "a") as f:
    f.write(f"{os.getpid()} {suite}\n")
if os.environ.get("FAKE_MMDEBSTRAP_PIDFILE"):
    with open(os.environ["FAKE_MMDEBSTRAP_PIDFILE"], "w") as f:
        f.write(str(os.getpid()))


def say(line: str) -> None:
    sys.stderr.write(f"I: {line}\n")
    sys.stderr.flush()


say("automatically chosen mode: root")
say("running apt-get update...")
say("downloading packages with apt...")
time.sleep(float(os.environ.get("FAKE_MMDEBSTRAP_SLEEP", "0.3")))
if os.environ.get("FAKE_MMDEBSTRAP_FAIL"):
    sys.stderr.write("E: apt-get download failed\n")
    sys.exit(1)
say("extracting archives...")
for d in ("etc", "usr/bin", "usr/lib/python3.11", "root", "var/cache"):
    os.makedirs(os.path.join(target, d), exist_ok=True)
os.symlink("python3.11", os.path.join(target, "usr/bin/python3"))
for name in ("hostname", "resolv.conf"):
    with open(os.path.join(target, "etc", name), "w") as f:
        f.write("build-host\n")
with open(os.path.join(target, "usr/lib/python3.11/EXTERNALLY-MANAGED"), "w") as f:
    f.write("[externally-managed]\n")
setuid = os.path.join(target, "usr/bin/su")
with open(setuid, "w") as f:
    f.write("#!/bin/sh\n")
os.chmod(setuid, 0o4755)
capped = os.path.join(target, "usr/bin/ping")
with open(capped, "w") as f:
    f.write("#!/bin/sh\n")
# VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13)
os.setxattr(capped, "security.capability", struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0))
with open(os.path.join(target, "usr/bin/perl"), "w") as f:
    f.write("perl\n")
os.link(os.path.join(target, "usr/bin/perl"), os.path.join(target, "usr/bin/perl5"))
os.chown(os.path.join(target, "var/cache"), 42, 42)
say("installing essential packages...")
say("installing remaining packages inside the chroot...")
say("cleaning package lists and apt cache...")
say("success in 0.3 seconds")
