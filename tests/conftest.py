import os
import tempfile

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MOLERE_CACHE", tempfile.mkdtemp(prefix="molere-cache-"))   # never the user's cache

import torch  # noqa: E402

torch.set_num_threads(2)


def pytest_addoption(parser):
    parser.addoption("--plugin", action="append", default=[], metavar="MODULE",
                     help="import MODULE first so the registry contract test covers the methods it registers "
                          "(e.g. pytest tests/test_contract.py --plugin my_methods)")


def pytest_configure(config):
    from molere.registry import load_plugins
    load_plugins(config.getoption("--plugin"))


def pytest_collection_modifyitems(config, items):
    from tests.optional_data import skip_absent
    skip_absent(items)
