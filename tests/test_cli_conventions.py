"""Conventions every command shares: `-h`, `--version`, one validated --device (fpa_export.common)."""
import subprocess
import sys

import pytest

from fpa_export.common.devices import check_device
from fpa_export.common.errors import FpaError
from fpa_export.common.version import PACKAGE_VERSION

COMMANDS = ["fpa-export", "fpa-convert", "fpa-sample", "fpa-gif", "fpa-fd", "fpa-vis", "fpa-train"]
MODULES = {"fpa-export": "export", "fpa-convert": "convert", "fpa-sample": "sample", "fpa-gif": "gif",
           "fpa-fd": "fd", "fpa-vis": "vis"}


def _main(command):
    import importlib

    if command == "fpa-train":
        return importlib.import_module("fpa_export.training.cli").main
    return importlib.import_module(f"fpa_export.cli.{MODULES[command]}").main


@pytest.mark.parametrize("command", COMMANDS)
def test_version_and_short_help(command):
    from click.testing import CliRunner

    main = _main(command)
    version = CliRunner().invoke(main, ["--version"], prog_name=command)
    assert version.exit_code == 0 and version.output.strip() == f"{command} {PACKAGE_VERSION}"
    short = CliRunner().invoke(main, ["-h"], prog_name=command)
    assert short.exit_code == 0 and short.output.startswith("Usage:")


SUBCOMMANDS = [("fpa-export", "onnx"), ("fpa-export", "trt"), ("fpa-sample", "stats"), ("fpa-vis", "invert"),
               ("fpa-vis", "texture"), ("fpa-vis", "style"), ("fpa-train", "fpa"), ("fpa-train", "unet")]


@pytest.mark.parametrize("command, sub", SUBCOMMANDS)
def test_subcommands_have_version_and_short_help(command, sub):
    from click.testing import CliRunner

    version = CliRunner().invoke(_main(command), [sub, "--version"], prog_name=command)
    assert version.exit_code == 0 and version.output.strip() == f"{command} {PACKAGE_VERSION}"
    short = CliRunner().invoke(_main(command), [sub, "-h"], prog_name=command)
    assert short.exit_code == 0 and short.output.startswith(f"Usage: {command} {sub}")
    assert "--version" in short.output


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "tpu", ""])
def test_malformed_devices_are_one_line_errors(text):
    with pytest.raises(FpaError, match="unknown device"):
        check_device(text)


def test_cuda_on_a_machine_without_it_names_what_is_missing():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FpaError, match=r"device 'cuda:1' is not available: .*use --device cpu"):
        check_device("cuda:1")
    assert check_device(" CPU ") == "cpu"


def test_cli_device_error_is_one_line_without_writing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "samples"
    result = subprocess.run([sys.executable, "-m", "fpa_export.cli.sample", "--n", "2", "--outdir", str(out),
                             "--device", "cuda"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device 'cuda' is not available" in result.stderr.strip().splitlines()[-1]
    assert not out.exists()


HEAVY = ("torch", "numpy", "PIL", "onnx", "onnxruntime", "tensorrt")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_nothing_heavy(command):
    """`--help` appears at once: importing a command's module and printing its help (and each
    sub-command's) loads none of torch, numpy, PIL, onnx, onnxruntime, TensorRT."""
    module = "fpa_export.training.cli" if command == "fpa-train" else f"fpa_export.cli.{MODULES[command]}"
    code = (f"import sys, click, {module} as m\n"
            "from click.testing import CliRunner\n"
            "subs = [[]] + [[name] for name in getattr(m.main, 'commands', {})]\n"
            "for sub in subs:\n"
            "    assert CliRunner().invoke(m.main, sub + ['--help']).exit_code == 0, sub\n"
            f"print(' '.join(sorted(n for n in {HEAVY!r} if n in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"{command} --help imported {result.stdout.strip()}"


@pytest.mark.parametrize("command", ["fpa-sample", "fpa-gif"])
def test_trunc_is_an_alias_of_truncation(command):
    main = _main(command)
    option = next(p for p in main.params if p.name == "truncation")
    assert "--trunc" in option.opts and "--truncation" in option.opts


# A program run of a command (console script, `python -m`: `command()` reading sys.argv on the main
# thread) ends its process at once when done (common.cli.end_process): threads joined and atexit run,
# the module teardown skipped. Arguments: the thread's output file, "profiled" or "", the command line.
QUICK_EXIT = """
import atexit, os, sys, threading, time
from pathlib import Path
out = Path(sys.argv[1])
class Teardown:
    def __del__(self, write=os.write):
        write(1, b"teardown ran\\n")
keep = Teardown()  # a module global: only the interpreter's teardown deletes it
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.3), out.write_text("done"))).start()
from concurrent.futures import ThreadPoolExecutor
idle = ThreadPoolExecutor(1)  # never shut down: its idle worker must not keep the process alive
idle.submit(int).result()
if sys.argv[2] == "profiled":
    sys.setprofile(lambda *args: None)
from {module} import main
sys.argv = ["prog", *sys.argv[3:]]
main()
"""


def _program(tmp_path, *args, module="fpa_export.cli.sample", profiled=False, stdout=subprocess.PIPE):
    script = QUICK_EXIT.format(module=module)
    return subprocess.run([sys.executable, "-c", script, str(tmp_path / "thread"),
                           "profiled" if profiled else "", *args],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_program_run_ends_its_process_at_once_after_threads_and_atexit(command, tmp_path):
    module = "fpa_export.training.cli" if command == "fpa-train" else f"fpa_export.cli.{MODULES[command]}"
    result = _program(tmp_path, "--version", module=module)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"{command} {PACKAGE_VERSION}", "atexit ran"]
    assert (tmp_path / "thread").read_text() == "done"  # the non-daemon thread finished first


def test_a_program_run_keeps_its_exit_status_and_one_line_errors(tmp_path):
    usage = _program(tmp_path)  # no --n: a usage error
    assert usage.returncode == 2 and "Missing option '--n'" in usage.stderr
    assert usage.stdout.splitlines() == ["atexit ran"]
    user = _program(tmp_path, "--n", "3")  # no --outdir: one line, status 1
    assert user.returncode == 1 and user.stderr.strip().splitlines() == [
        "Error: give --outdir (or --no-save with --reference-stats)"]


def test_a_program_run_with_stdout_closed_still_succeeds(tmp_path):
    result = _program(tmp_path, "--n", "2", "--outdir", str(tmp_path / "s"), "--backend", "torch",
                      stdout=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    closed = subprocess.run(f"{sys.executable} -m fpa_export.cli.sample --version >&-", shell=True,
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 0, closed.stderr[-2000:]


LATE_CTRL_C = """
import atexit, os, signal, sys, time
def late():  # a Ctrl-C while an exit handler runs (an export's temp folder being removed)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    print("handler finished", flush=True)
atexit.register(late)
from fpa_export.cli.sample import main
sys.argv = ["fpa-sample", "--version"]
main()
"""


def test_a_ctrl_c_once_the_work_is_done_is_no_traceback():
    result = subprocess.run([sys.executable, "-c", LATE_CTRL_C], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"fpa-sample {PACKAGE_VERSION}", "handler finished"]


def test_under_a_profiler_a_program_run_exits_normally(tmp_path):
    """cProfile and coverage write their reports in the normal exit, so it is kept for them."""
    result = _program(tmp_path, "--version", profiled=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"fpa-sample {PACKAGE_VERSION}", "atexit ran", "teardown ran"]


CALLED = """
import threading
from fpa_export.cli.sample import main
for attempt in range(2):  # a script calling the command with arguments: click's SystemExit, no end
    try:
        main(["--version"])
    except SystemExit as stop:
        print("exit", stop.code, flush=True)
worker = threading.Thread(target=main)  # sys.argv's command line, but not on the main thread
worker.start(); worker.join()
print("after", flush=True)
"""


def test_a_call_with_arguments_or_from_a_thread_does_not_end_the_process():
    result = subprocess.run([sys.executable, "-c", CALLED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    version = f"fpa-sample {PACKAGE_VERSION}"
    assert result.stdout.splitlines() == [version, "exit 0", version, "exit 0", "after"]
    assert "Missing option '--n'" in result.stderr  # the thread's run: click's usage error, then on


@pytest.mark.parametrize("command, expected", [("fpa-sample", "GC_THRESHOLDS"), ("fpa-train", "default")])
def test_a_program_run_collects_garbage_less_often_except_training(command, expected):
    import gc

    from fpa_export.common.cli import GC_THRESHOLDS

    module = "fpa_export.training.cli" if command == "fpa-train" else "fpa_export.cli.sample"
    code = ("import atexit, gc, sys; atexit.register(lambda: print(*gc.get_threshold()))\n"
            f"from {module} import main; sys.argv = ['prog', '--version']; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    wanted = GC_THRESHOLDS if expected == "GC_THRESHOLDS" else gc.get_threshold()
    assert result.stdout.splitlines()[-1] == " ".join(map(str, wanted))


@pytest.mark.parametrize("command, args, text", [
    ("fpa-sample", ["--n", "4", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    ("fpa-sample", ["--n", "4", "--precision", "BF16"], "Invalid value for '--precision'"),
    ("fpa-sample", ["--n", "4", "--seed", "-1"], "Invalid value for '--seed'"),
    ("fpa-sample", [], "Missing option '--n'"),
    ("fpa-sample", ["stats"], "Missing argument 'IMAGE_DIR'"),
    ("fpa-sample", ["no-such-model.pt", "--n", "4"], "does not exist"),
    ("fpa-export", ["onnx", "--opset", "13"], "Invalid value for '--opset'"),
    ("fpa-export", ["tflite"], "No such command 'tflite'"),
    ("fpa-gif", ["--fps", "0"], "Invalid value for '--fps'"),
    ("fpa-fd", ["default", "--size", "8"], "Invalid value for '--size'"),
    ("fpa-vis", ["invert", "--bogus"], "No such option '--bogus'"),
    ("fpa-convert", [], "Missing argument"),
    ("fpa-train", ["--steps", "0", "--out", "x"], "Invalid value for '--steps'"),
    ("fpa-train", ["unet", "--out", "{tmp}/u"], "Missing option '--from'"),
    # an option the run would ignore is refused, not silently dropped
    ("fpa-sample", ["--n", "4", "--outdir", "{tmp}/s", "--jpeg-quality", "80"],
     "--jpeg-quality applies only with --format jpg"),
    ("fpa-sample", ["stats", "{tmp}", "--write-folder", "{tmp}/r", "--seeds", "1"],
     "--seeds applies only with -o"),
    ("fpa-sample", ["--n", "4", "--outdir", "{tmp}/s", "--no-save", "--reference-stats", "{tmp}/g.onnx"],
     "--outdir applies only without --no-save"),
    ("fpa-export", ["onnx", "-o", "{tmp}/g.onnx", "--no-verify", "--atol", "0.1"],
     "--atol applies only when the graph is verified"),
    ("fpa-export", ["trt", "{tmp}/g.onnx", "--fp16"], "--fp16 applies only when SOURCE is a checkpoint"),
    ("fpa-gif", ["--grid", "{tmp}/g.png", "--hold-last", "100"],
     "--hold-last applies only to an animation (-o or --mp4)"),
    ("fpa-gif", ["--grid", "{tmp}/g.png", "--mode", "both"], "--mode applies only to an animation"),
    # an empty path would silently mean the current folder
    ("fpa-sample", ["--n", "4", "--outdir", ""], "Invalid value for '--outdir': an empty path"),
    ("fpa-train", ["--out", "", "--steps", "1"], "an empty path; give a folder name"),
    ("fpa-convert", ["x.pt", "-o", ""], "an empty path; give a file name"),
])
def test_usage_mistakes_are_one_line_naming_the_help(command, args, text, tmp_path):
    from click.testing import CliRunner

    (tmp_path / "g.onnx").write_bytes(b"")  # exists (the argument's check); never read
    args = [arg.format(tmp=tmp_path) for arg in args]
    result = CliRunner().invoke(_main(command), args, prog_name=command)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]  # nothing written
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.output
    assert lines[0].endswith(" --help)") and f"(see: {command}" in lines[0]


def test_a_group_called_bare_shows_its_help():
    from click.testing import CliRunner

    result = CliRunner().invoke(_main("fpa-vis"), [], prog_name="fpa-vis")
    assert result.output.startswith("Usage: fpa-vis") and "Commands:" in result.output
