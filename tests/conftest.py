import os
import sys
from pathlib import Path

import pytest

# Tests import helpers as ``tests.<module>``; make the checkout importable however pytest runs.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The session-wide check that the sentinel credentials (tests/sentinel.py) leak nowhere:
# captured output, test ids, child command lines, every file of the session's temp folder.
from tests.sentinel_plugin import pytest_configure  # noqa: E402, F401


@pytest.fixture(autouse=True, scope="session")
def _no_cached_pair_list(tmp_path_factory):
    """Config validation also reads the pair list `recorder pairs --update` caches: tests
    (and the recorders they start) see only the bundled table, never a list cached on this
    machine."""
    os.environ["MARKET_RECORDER_CACHE"] = str(tmp_path_factory.mktemp("pair-cache"))
    yield
    os.environ.pop("MARKET_RECORDER_CACHE", None)


# -- markers and shards ---------------------------------------------------------------------
# ``e2e``: tests that run real processes (the simulator, the recorder, child interpreters);
# `make test-fast` leaves them out. Whole modules, and single tests of otherwise fast modules.
E2E_MODULES = {
    "test_e2e_book_integrity", "test_e2e_public", "test_e2e_raw", "test_kucoin_commands",
    "test_kucoin_e2e", "test_kucoin_sim_auth", "test_kucoin_sim_book", "test_kucoin_sim_faults",
    "test_kucoin_sim_protocol", "test_kucoin_sim_replay", "test_lean_imports", "test_pair_list",
    "test_private_e2e", "test_private_secrets", "test_private_sentinel", "test_reconcile_e2e",
    "test_reliability",
    "test_simulator_checksums", "test_simulator_faults", "test_simulator_maxspeed",
    "test_simulator_private", "test_simulator_protocol", "test_simulator_replay",
    "test_simulator_rest", "test_status", "test_supervisor", "test_token_cli",
    "test_toy_exchange", "test_rotation", "test_metrics_e2e", "test_status_page_e2e",
    "test_live_commands", "test_scale_scenario", "test_object_store_e2e",
    "test_catalog_e2e", "test_catalog_postgres", "test_spark_export", "test_many_hosts_e2e",
    "test_process_entry",
}
E2E_TESTS = {
    "test_cli_reports_config_error_and_exits_2",
    "test_cli_reports_each_kind_of_config_error_in_one_line_and_exits_2",
    "test_nonce_strictly_increases_across_processes_started_together",
    "test_processes_sharing_a_key_never_send_a_nonce_out_of_order", "test_book_command",
    "test_kill_9_loses_at_most_the_last_interval", "test_an_incomplete_checkpoint_is_never_used",
    "test_e2e_checkpoints_are_whole_verified_books", "test_spec_import_is_cheap",
    "test_e2e_rebuild_with_checkpoints_equals_without",
    "test_rebuilt_book_equals_independent_book_from_raw_frames",
    "test_rebuild_from_checkpoints_equals_fold_from_snapshot",
    "test_several_connections_record_in_one_process_and_stop_cleanly",
    "test_a_crash_restarts_every_role_of_the_process_with_a_gap_each",
}
SHARD_ENV = "RECORDER_TEST_SHARD"  # "k/n": run the k-th of n shards (see the Makefile)


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in E2E_MODULES or item.originalname in E2E_TESTS:
            item.add_marker(pytest.mark.e2e)
    shard = os.environ.get(SHARD_ENV)
    if not shard:
        return
    k, n = (int(x) for x in shard.split("/"))
    # Whole modules per shard (module fixtures run once), e2e modules spread first by their
    # test count so that the shards take about as long.
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.module.__name__, []).append(item)

    def weight(name: str) -> float:
        tests = modules[name]
        return sum(5.0 if t.get_closest_marker("e2e") else 0.05 for t in tests)

    loads = [0.0] * n
    keep: list = []
    for name in sorted(modules, key=lambda m: (-weight(m), m)):
        target = loads.index(min(loads))
        loads[target] += weight(name)
        if target == k - 1:
            keep.extend(modules[name])
    deselected = [i for i in items if i not in set(keep)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = [i for i in items if i in set(keep)]
