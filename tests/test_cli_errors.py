"""The one-line error rule shared by every command line (fpa_export.common.cli)."""
import click
from click.testing import CliRunner

from fpa_export.models import CheckpointError
from fpa_export.common.cli import friendly_errors


class StopTraining(RuntimeError):
    pass


def _command(exc, **options):
    decorate = friendly_errors(**options) if options else friendly_errors

    @click.command()
    @decorate
    def cmd():
        raise exc
    return cmd


def _run(cmd):
    return CliRunner().invoke(cmd, [])


def test_library_errors_become_one_line_exit_1():
    result = _run(_command(CheckpointError("bad.pt: not a checkpoint\nsecond line")))
    assert result.exit_code == 1
    assert result.output.strip() == "Error: bad.pt: not a checkpoint"


def test_os_error_names_the_file():
    result = _run(_command(PermissionError(13, "Permission denied", "out/x.png")))
    assert result.exit_code == 1
    assert result.output.strip() == "Error: Permission denied (out/x.png)"


def test_extra_exception_types_only_when_asked():
    plain = _run(_command(StopTraining("loss is NaN")))
    assert plain.exit_code == 1 and isinstance(plain.exception, StopTraining)  # a bug stays a traceback
    caught = _run(_command(StopTraining("loss is NaN"), catch=(StopTraining,)))
    assert caught.exit_code == 1 and caught.output.strip() == "Error: loss is NaN"


def test_interrupt_prints_the_configured_line_and_exits_130():
    result = _run(_command(KeyboardInterrupt(), interrupted="Stopped; resume later."))
    assert result.exit_code == 130
    assert "Stopped; resume later." in result.output


def test_bare_value_error_is_a_bug_with_its_traceback():
    result = _run(_command(ValueError("internal shape mismatch")))
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "Error:" not in result.output


def test_missing_extra_is_one_line_with_the_install_command():
    from fpa_export.common.errors import MissingExtra

    result = _run(_command(MissingExtra("tensorrt", "trt", "to run engines")))
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: tensorrt is not installed (needed to run engines); "
                                     "install it with: pip install 'fpa-export[trt]'")


def test_require_names_the_extra_of_an_absent_package():
    import pytest
    from fpa_export.common.errors import MissingExtra
    from fpa_export.common.optional import require

    with pytest.raises(MissingExtra, match=r"pip install no_such_package_fpa"):
        require("no_such_package_fpa", "x")


def test_a_path_that_is_not_a_readable_file_says_what_it_is(tmp_path):
    import subprocess
    import sys

    from fpa_export.common.errors import not_a_file

    assert not_a_file(tmp_path / "x.pt") == f"{tmp_path / 'x.pt'}: no such file"
    assert not_a_file(tmp_path) == f"{tmp_path}: a folder, not a file"
    assert not_a_file("/dev/null") == "/dev/null: not a regular file"
    for args in (["-m", "fpa_export.cli.sample", "/dev/null", "--n", "2", "--outdir", str(tmp_path / "s")],
                 ["-m", "fpa_export.cli.vis", "invert", str(tmp_path), "-o", str(tmp_path / "v.png")]):
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "no such file" not in done.stderr and ("not a regular file" in done.stderr
                                                     or "a folder, not a file" in done.stderr)


def test_out_of_memory_is_one_line_and_other_runtime_errors_stay_tracebacks():
    torch_cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                             "memory: you tried to allocate 10240000000 bytes. Error code 12")
    result = _run(_command(torch_cpu))
    assert result.exit_code == 1 and result.output.strip().startswith(
        "Error: out of memory (one allocation of 9.5 GiB); ask for less at once")
    cuda = type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2.00 GiB.")
    assert "(one allocation of 2.00 GiB)" in _run(_command(cuda)).output
    assert _run(_command(MemoryError())).output.strip().startswith("Error: out of memory; ask for less")
    small = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 52428800 bytes.")
    assert "(one allocation of 50 MiB)" in _run(_command(small)).output
    bug = _run(_command(RuntimeError("shape mismatch")))
    assert bug.exit_code == 1 and isinstance(bug.exception, RuntimeError)  # not turned into a user error


def test_a_real_allocation_failure_of_the_cli_is_one_line(tmp_path):
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    out = tmp_path / "run"
    command = [sys.executable, "-m", "fpa_export.training.cli", "--data", "mnist", "--image-size", "16",
               "--channels", "1", "--num-steps", "2", "--latent-size", "4", "--mini-latent-size", "2",
               "--input-size", "4", "--hidden-size", "8", "--batch-size", "10000000", "--steps", "1",
               "--eval-every", "0", "--no-progress", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.stderr.strip().splitlines()[-1].startswith("Error: out of memory (one allocation of"), \
        done.stderr[-500:]
    assert not (out / "latest.pt").exists()


def test_sizes_in_messages_keep_their_figure_below_a_gibibyte():
    from fpa_export.common.errors import size_text

    assert [size_text(n) for n in (512, 40 * 2**10, 312 * 2**20, 3 * 2**29)] == [
        "512 bytes", "40 KiB", "312 MiB", "1.5 GiB"]
