"""One local Ray cluster per test session, and the path to ../shared/data.

Real data is found through RAYCHAT_SHARED_DATA (default: ../shared/data beside the checkout);
tests that need it are skipped with a message saying where it was looked for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYCHAT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set RAYCHAT_SHARED_DATA to its path)")
    return SHARED_DATA


@pytest.fixture()
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writes Python source as an importable module (for user code named by dotted path); returns
    its name, unique per test, and forgets the module afterwards."""
    names: list[str] = []

    def write(source: str, prefix: str = "user_module") -> str:
        name = f"{prefix}_{tmp_path.name.replace('-', '_')}"
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU local Ray for the whole session; tests that need Ray take this fixture."""
    import ray

    if not ray.is_initialized():
        from pipelines.runtime import set_local_cluster_env

        set_local_cluster_env()
        ray.init(
            num_cpus=2,
            object_store_memory=400 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            # Ray kills idle workers after ~1 s on small machines; every Ray Data shuffle task then
            # waits for a new worker process. Keeping a few alive made the dedup tests 10x faster.
            _system_config={"num_workers_soft_limit": 8},
        )
    yield ray
    from pipelines.runtime import shutdown_and_reap

    # not ray.shutdown(): Ray 2.60's worker processes can deadlock in their own exit (README, runtime),
    # and two finished Ray Train controllers (546 MB each) outlived a whole CI run that way
    shutdown_and_reap()


@pytest.fixture
def one_thread():
    """Tests of small models run torch on one thread: on a shared 2-core box, more threads only thrash."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
