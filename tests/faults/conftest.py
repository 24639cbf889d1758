import dagster as dg
import pytest


@pytest.fixture
def instance(stack, monkeypatch):
    """The instance of the module's dev stack (each module defines its ``stack`` fixture)."""
    monkeypatch.setenv("DAGSTER_HOME", stack.env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        yield instance
