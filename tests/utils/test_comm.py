"""od2.utils.comm: when a process counts as launched by torchrun, and the single-process answers."""

from __future__ import annotations

import logging

import pytest
import torch

from od2.utils import comm

LAUNCH = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}


@pytest.fixture
def clean_env(monkeypatch):
    for name in (*comm.LAUNCHER_VARIABLES, "TORCHELASTIC_RUN_ID", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_master_addr_alone_is_no_launch(clean_env, caplog):
    clean_env.setenv("MASTER_ADDR", "10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="od2.utils.comm"):
        device = comm.init_distributed(torch.device("cpu"))
    assert device == torch.device("cpu")
    assert not comm.is_distributed()
    assert "MASTER_ADDR set but RANK, WORLD_SIZE, MASTER_PORT not" in caplog.text


def test_torchelastic_id_alone_is_no_launch(clean_env):
    clean_env.setenv("TORCHELASTIC_RUN_ID", "none")
    assert not comm.launched_by_launcher()


def test_all_launcher_variables_count_as_a_launch(clean_env, caplog):
    for name, value in LAUNCH.items():
        clean_env.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="od2.utils.comm"):
        assert comm.launched_by_launcher()
    assert caplog.text == ""


def test_single_process_answers(clean_env):
    assert (comm.get_rank(), comm.get_world_size(), comm.is_main_process()) == (0, 1, True)
    assert comm.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert comm.reduce_mean({"x": torch.tensor(2.5), "y": torch.tensor(1)}) == {"x": 2.5, "y": 1.0}
