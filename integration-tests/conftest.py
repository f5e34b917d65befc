"""pytest fixtures shared by every integration test folder."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "harness"))

from hermes_harness import Suite  # noqa: E402


@pytest.fixture
def suite():
    s = Suite()
    try:
        yield s
        s.check_health()
    finally:
        for name, d in s.daemons.items():  # shown by pytest only when the test fails
            print(f"----- log of {name} -----\n{d.log_text()[-6000:]}")
        s.cleanup()


@pytest.fixture
def running(suite):
    """A suite with the controller and one instance of every service kind, converged."""
    suite.start_all()
    return suite
