"""Every test that takes `backend` runs once per backend built into the library; a backend with
no device on this machine is reported as skipped, never passed."""

import os

import pytest

import moe

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(params=["cpu", "vulkan", "opencl"])
def backend(request):
    name = request.param
    if name not in moe.backends():
        pytest.skip(f"the library is built without {name}")
    if not moe.devices(name):
        pytest.skip(f"no {name} device on this machine")
    return name


@pytest.fixture
def ctx(backend):
    with moe.Context(backend, threads=2 if backend == "cpu" else 0) as c:
        yield c


@pytest.fixture
def cpu():
    """A CPU context beside ctx (another one when ctx is a CPU context too): a placement's second."""
    with moe.Context("cpu", threads=2) as c:
        yield c
