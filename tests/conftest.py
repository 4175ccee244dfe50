from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

# CI has 2 cores; keep each test process from oversubscribing them.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"shared data not found at {SHARED_DATA} (tests expect ../shared/data beside the repo)"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Caches and downloads of one test never leak into another or into ~/.cache.
    root = tmp_path_factory.getbasetemp() / "leanaug-cache"
    monkeypatch.setenv("LEANAUG_CACHE", str(root))
    monkeypatch.setenv("LEANAUG_DATA", str(root / "data"))
