from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "llmrouter"


@pytest.fixture(scope="session")
def fixture_paths():
    return FIXTURES / "routing_subset.json", FIXTURES / "llm_candidates.json"
