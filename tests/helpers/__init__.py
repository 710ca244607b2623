"""What several tests share: the repository's root, and one module per kind of helper.

* :mod:`tests.helpers.e2e` -- real fake servers, an in-process engine, ``mux run`` processes;
* :mod:`tests.helpers.hostile` -- the hostile servers' plans and the checks of their outcome;
* :mod:`tests.helpers.quality` -- a transport scripted in uptimes and refusals (MockClock);
* :mod:`tests.helpers.redis` -- real Redis servers.
"""

from __future__ import annotations

from pathlib import Path

#: The repository's root (pyproject.toml, docs/, examples/), wherever a test file sits.
ROOT = Path(__file__).resolve().parents[2]
