"""Inside a new container's private mount namespace: bind-mount its volumes, then exec it.

``python -m testbed.enter_container <launch.json>``, run by :mod:`testbed.containers` under
``ip netns exec <pod> unshare --mount --propagation private``. The file says what to mount
(``[source, target, read_only]``, parents first), the working directory, and the complete
command (``setpriv`` with the container's user and capabilities, then the program) and its
environment. Imports nothing beyond the standard library: it runs once per container start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def enter(argv: Sequence[str]) -> int:
    """Mount what ``argv[0]`` (the launch file) says, then exec its command."""
    spec = json.loads(Path(argv[0]).read_text())
    for source, target, read_only in spec["mounts"]:
        subprocess.run(["mount", "--bind", source, target], check=True)
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
    os.chdir(spec["workdir"])
    os.execve(spec["argv"][0], spec["argv"], spec["env"])
    return 127  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(enter(sys.argv[1:]))
