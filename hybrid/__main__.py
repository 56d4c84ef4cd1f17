"""``python -m hybrid``: the ``hybrid`` command (:func:`hybrid.cli.main`)."""

import sys

from hybrid.cli import main

sys.exit(main())
