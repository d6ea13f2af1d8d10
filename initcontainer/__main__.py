"""``python -m initcontainer``: the same as ``remora init``."""

import sys

from initcontainer.cli import main

sys.exit(main())
