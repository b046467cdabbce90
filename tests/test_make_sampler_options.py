"""make_sampler's backend options: a torch-only option picks torch under "auto"; an unknown one is one line."""
import pytest

from tests.conftest import make_generator
from fpa_export.common.errors import FpaError
from fpa_export.models import save_checkpoint
from fpa_export.runtime.factory import make_sampler


@pytest.fixture()
def checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path / "cache"))
    return str(save_checkpoint(tmp_path / "tiny.pt", make_generator(0)))


def test_torch_only_option_under_auto_runs_torch(checkpoint):
    for options in ({"compile": True}, {"cuda_graphs": False}):
        assert type(make_sampler(checkpoint, **options)).__name__ == "TorchSampler", options


def test_unknown_option_is_one_line(checkpoint):
    with pytest.raises(FpaError, match=r"backend='torch' has no option 'lstm' \(an option of backend='onnx'\)"):
        make_sampler(checkpoint, backend="torch", lstm="op")
    with pytest.raises(FpaError, match="has no option 'bogus'"):
        make_sampler(checkpoint, bogus=1)


def test_a_device_this_machine_lacks_is_one_line_from_the_python_api_too():
    import torch

    import fpa_export
    from fpa_export.common.errors import FpaError
    from fpa_export.runtime import make_sampler

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for call in (lambda: fpa_export.load_generator(device="cuda"), lambda: make_sampler(None, device="cuda:0")):
        with pytest.raises(FpaError, match="device 'cuda(:0)?' is not available"):
            call()
    with pytest.raises(FpaError, match="unknown device 'gpu'"):
        make_sampler(None, device="gpu")
