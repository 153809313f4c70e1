"""Which SLURM jobs a stopping sweep cancels (the cancelling itself runs against a fake SLURM in
tests/test_slurm_end_to_end.py)."""

from omegaconf import OmegaConf

import cnnx.slurm_jobs
from cnnx.slurm_jobs import SlurmJobsStopWithTheSweep, submitted_job_ids


def test_the_array_ids_come_from_submitits_job_folders(tmp_path):
    for name in ("1000_0", "1000_1", "1003_2", "1004", "not-a-job", "12x_3"):
        (tmp_path / name).mkdir()
    (tmp_path / "1005_0").write_text("a file, not a job folder")
    assert submitted_job_ids(tmp_path) == ["1000", "1003", "1004"]
    assert submitted_job_ids(tmp_path / "missing") == []


def test_only_a_slurm_sweep_records_its_job_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(cnnx.slurm_jobs, "_jobs_folder", None)
    local = OmegaConf.create({"hydra": {"launcher": {
        "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "submitit_folder": f"{tmp_path}/.submitit/%j"}}})
    SlurmJobsStopWithTheSweep().on_multirun_start(local)
    assert cnnx.slurm_jobs._jobs_folder is None
    slurm = OmegaConf.create({"hydra": {"launcher": {
        "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "submitit_folder": f"{tmp_path}/.submitit/%j"}}})
    SlurmJobsStopWithTheSweep().on_multirun_start(slurm)
    assert cnnx.slurm_jobs._jobs_folder == tmp_path / ".submitit"
