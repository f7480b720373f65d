"""Shared test setup: single-threaded, passive OpenMP (2-core CI boxes), no hub access."""

import os

import habla  # noqa: F401  (first: it pins the numeric libraries' CPU kernels before they load)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """The default pipeline, complete, at toy size (tests/pipeline_harness.py); read-only:
    copy it before changing anything."""
    import pipeline_harness as ph

    project = ph.make_tiny_project(tmp_path_factory.mktemp("tiny") / "root", ".")
    ph.run_repro(project, ".")
    return project


@pytest.fixture(scope="session")
def tiny_recipes(tmp_path_factory):
    """recipe folder -> a project that ran that recipe completely at toy size
    (tests/pipeline_harness.py); read-only: copy it before changing anything."""
    import pipeline_harness as ph

    out = {}
    for pipeline in ph.PIPELINES:
        if pipeline == "." or ph.missing(pipeline):  # test_dvc_yaml says what to install
            continue
        project = ph.make_tiny_project(tmp_path_factory.mktemp("tiny") / "recipe", pipeline)
        ph.run_repro(project, pipeline)
        out[pipeline] = project
    return out


@pytest.fixture(scope="session")
def params_traces(tiny_root, tiny_recipes):
    """(pipeline folder, stage) -> params keys the stage read in its tiny run."""
    import pipeline_harness as ph

    out = {(".", stage): keys for stage, keys in ph.read_traces(tiny_root, ".").items()}
    for pipeline, project in tiny_recipes.items():
        out.update({(pipeline, stage): keys
                    for stage, keys in ph.read_traces(project, pipeline).items()})
    return out
