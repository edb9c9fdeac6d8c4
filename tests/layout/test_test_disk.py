"""The test run's own disk use: CI's disk is shared by the run's full-size checkpoints."""


def test_a_passed_tests_folder_is_removed_and_only_this_runs_are_kept(pytestconfig, tmp_path):
    # One full run writes about 28 GB of checkpoints into tmp_path folders (5.4 GB for the
    # depth2img parity test alone). Kept, as pytest's defaults keep them, they filled CI's disk
    # mid-run (stop 27: "No space left on device" in test_upscale.py).
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
    assert int(pytestconfig.getini("tmp_path_retention_count")) <= 1
    assert tmp_path.is_dir()
