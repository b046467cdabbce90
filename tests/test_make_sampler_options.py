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
