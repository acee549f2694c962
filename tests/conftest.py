"""Test-suite settings.

Hypothesis draws new examples on every run unless told otherwise. Under CI (``CI`` set, as
``.ci/run`` is run) the property tests are derandomized, so that a green commit stays green next
month; ``HYPOTHESIS_PROFILE=explore`` (or a run outside CI) searches anew each time.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "explore"))
