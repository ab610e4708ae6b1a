"""A Windows file version (four numbers, each 0-65535) from a PEP 440 version, in the same order.

    python installer/file_version.py 0.2.0rc1   ->   0.2.0.30001

Windows (VIProductVersion in NSIS, the exe's VERSIONINFO from PyInstaller) wants exactly four
numbers; Python versions have pre-, post- and dev-releases. The first three numbers are the release
(missing ones are 0); the fourth encodes where in the release cycle it is, so a later PEP 440
version always gets a larger file version:
    X.Y.Z.devN -> N            X.Y.ZaN -> 10000+N     X.Y.ZbN -> 20000+N     X.Y.ZrcN -> 30000+N
    X.Y.Z      -> 40000        X.Y.Z.postN -> 40000+N
A dev-release of a pre- or post-release counts one below it (1.0rc2.dev1 -> 30001). The epoch and a
local label (+abc) are left out. Used by installer/phoenix.spec and the makensis callers.
"""

from __future__ import annotations

import re
import sys

# PEP 440's accepted spellings (case-insensitive, optional separators, alpha/beta/c/pre/preview/rev/r)
_PEP440 = re.compile(r"""
    ^\s*v?(?:\d+!)?(?P<release>\d+(?:\.\d+)*)
    (?:[-_.]?(?P<pre>a|alpha|b|beta|rc|c|pre|preview)[-_.]?(?P<pre_n>\d+)?)?
    (?:-(?P<post_implicit>\d+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post_n>\d+)?)?
    (?:[-_.]?dev[-_.]?(?P<dev_n>\d+)?)?
    (?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?\s*$""", re.I | re.X)
_STAGE = {"a": 10000, "alpha": 10000, "b": 20000, "beta": 20000, "rc": 30000, "c": 30000, "pre": 30000,
          "preview": 30000}
_FINAL = 40000
_SPAN = 9999  # the most a pre-, post- or dev-release number may be


def file_version(version: str) -> str:
    m = _PEP440.match(version or "")
    if not m:
        raise ValueError(f"{version!r} is not a PEP 440 version, so no Windows file version can be made from it.")
    release = [int(x) for x in m["release"].split(".")]
    if len(release) > 3:
        raise ValueError(f"{version!r} has more than three release numbers; a Windows file version keeps only "
                         "three plus the release stage.")
    if any(x > 65535 for x in release):
        raise ValueError(f"{version!r} has a release number above 65535, the most a Windows file version holds.")
    pre = m["pre"]
    post = m["post_implicit"] or m["post_n"] or ("0" if m.group(0).lower().count("post") else None)
    dev = m["dev_n"] if m["dev_n"] is not None else ("0" if re.search(r"dev", m.group(0), re.I) else None)
    numbers = [int(x) for x in (m["pre_n"], post, dev) if x is not None]
    if any(n > _SPAN for n in numbers):
        raise ValueError(f"{version!r} has a pre-, post- or dev-release number above {_SPAN}.")
    if pre is not None:
        fourth = _STAGE[pre.lower()] + int(m["pre_n"] or 0)
    elif post is not None:
        fourth = _FINAL + int(post)
    elif dev is not None:
        fourth = int(dev)  # X.Y.Z.devN: before any pre-release of X.Y.Z
    else:
        fourth = _FINAL
    if dev is not None and (pre is not None or post is not None):
        fourth -= 1
    release += [0] * (3 - len(release))
    return ".".join(str(x) for x in release + [fourth])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: file_version.py VERSION", file=sys.stderr)
        return 2
    try:
        print(file_version(argv[0]))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
