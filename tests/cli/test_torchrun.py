"""The command line as one process of a torchrun launch: the checks that depend on the launch
(environment as torchrun sets it, no process started), and a real two-process launch of the demo."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli.helpers import REPO, cli_env, launch_env, read_video
from tests.distributed.ranks import run_ranks
from wan_runtime import generate
from wan_runtime.cli_args import InvalidArguments, resolve
from wan_runtime.generate import LOADING, _memory_remedy, build_parser, main


def _resolve(*argv: str):
    return resolve(build_parser().parse_args(list(argv)))


@pytest.fixture
def second_of_two(monkeypatch):
    """This process as rank 1 of a two-process launch."""
    launch_env(monkeypatch, 1, 2)


def test_launch_defaults(second_of_two, ti2v_root):
    config = _resolve("--ckpt_dir", str(ti2v_root), "--device", "cpu", "--ulysses_size", "2", "--dit_fsdp")
    assert (config.launch.rank, config.launch.world, config.launch.local_rank) == (1, 2, 1)
    assert config.offload_model is False, "the official default of a several-process launch"
    assert (config.ulysses_size, config.dit_fsdp, config.t5_fsdp) == (2, True, False)


@pytest.mark.parametrize("argv, words", [
    (["--ulysses_size", "4"], "--ulysses_size 4 splits each DiT forward over 4 processes but this launch"),
    (["--dit_fsdp", "--offload_model", "True"], "set --offload_model False (the default under torchrun)"),
    (["--t5_fsdp", "--t5_cpu"], "--t5_fsdp shards the text encoder over the GPUs and --t5_cpu keeps it"),
], ids=["ulysses size not the launch's", "fsdp with offload", "t5 sharded and on the CPU"])
def test_launch_refuses_what_cannot_work(second_of_two, ti2v_root, argv, words):
    with pytest.raises(InvalidArguments) as caught:
        _resolve("--ckpt_dir", str(ti2v_root), "--device", "cpu", *argv)
    assert [problem for problem in caught.value.problems if words in problem], caught.value.problems


def test_heads_the_size_does_not_divide_are_refused_before_loading(monkeypatch, ti2v_root):
    launch_env(monkeypatch, 0, 4)
    with pytest.raises(InvalidArguments, match="ulysses_size 4 does not divide the DiT's 2 attention heads"):
        _resolve("--ckpt_dir", str(ti2v_root), "--device", "cpu", "--ulysses_size", "4")


def test_each_process_tells_its_own_problem_and_rank_0_the_common_ones(monkeypatch, ti2v_root, capsys):
    """Three processes on a machine of two GPUs, and a seed out of range: rank 2 alone has no GPU
    (it says so, with its rank); the seed every process finds wrong rank 0 alone tells."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    argv = ["--ckpt_dir", str(ti2v_root), "--device", "cuda", "--dit_fsdp", "--base_seed", str(2**64)]
    lines = {}
    for rank in range(3):
        launch_env(monkeypatch, rank, 3)
        assert main(argv) == 2
        lines[rank] = capsys.readouterr().err.splitlines()
    assert len(lines[0]) == 1 and lines[0][0].startswith("error: rank 0: --base_seed")
    assert lines[1] == []
    assert lines[2] == ["error: rank 2: LOCAL_RANK 2 has no GPU of its own: this machine has 2; start at "
                        "most that many processes on it"]


def test_out_of_memory_advice_under_torchrun(monkeypatch):
    launch_env(monkeypatch, 0, 2)
    advice = _memory_remedy(build_parser().parse_args(["--t5_fsdp"]))
    assert "--offload_model True" in advice and "--dit_fsdp" in advice
    assert "--t5_cpu" not in advice and "--t5_fsdp (" not in advice
    split = "--ulysses_size 2 (each GPU computes a slice of the tokens)"
    assert split in advice and split in _memory_remedy(build_parser().parse_args([]), stage="denoise")
    for argv, stage in ((["--ulysses_size", "2"], "denoise"), ([], "vae_decode"), ([], LOADING)):
        advice = _memory_remedy(build_parser().parse_args(argv), stage=stage)
        assert "--ulysses_size" not in advice, (argv, stage)


def test_a_launch_that_shares_no_work_is_told(monkeypatch, ti2v_root):
    launch_env(monkeypatch, 0, 2)
    with pytest.warns(UserWarning, match="2 processes share no work without --ulysses_size"):
        _resolve("--ckpt_dir", str(ti2v_root), "--device", "cpu")


def test_a_rank_that_is_no_rank_is_named(monkeypatch, ti2v_root):
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(InvalidArguments, match="RANK='first' is not an integer"):
        _resolve("--ckpt_dir", str(ti2v_root), "--device", "cpu")


ARGS = ["-m", "wan_runtime.generate", "--demo", "--base_seed", "4"]


def _torchrun(tmp_path: Path, name: str | None, *flags: str) -> subprocess.CompletedProcess:
    """Two processes of ``ARGS`` and ``flags`` writing ``name`` in ``tmp_path`` (None: the flags say)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    save = [] if name is None else ["--save_file", str(tmp_path / name)]
    argv = [torchrun, "--nproc_per_node", "2", *ARGS, *flags, *save]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=cli_env(), cwd=tmp_path)


@pytest.fixture(scope="module")
def one_process_frames(tmp_path_factory):
    path = tmp_path_factory.mktemp("one") / "one.mp4"
    one = subprocess.run([sys.executable, *ARGS, "--save_file", str(path)], capture_output=True, text=True,
                         timeout=600, env=cli_env(), cwd=REPO)
    assert one.returncode == 0, one.stderr
    return read_video(path)[0]


def test_two_processes_write_one_video(tmp_path, one_process_frames):
    """Every several-GPU flag: rank 0 alone reports and writes. FSDP computes from weights
    gathered into buffers of its own (float32 rounding apart, ``tests/distributed``), which the
    encoder's rounding to 8 bits and H.264 make differences of a few levels here and there."""
    two = _torchrun(tmp_path, "two.mp4", "--ulysses_size", "2", "--dit_fsdp", "--t5_fsdp")
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote ") == 1 and "processes: 2" in two.stdout, two.stdout
    assert "memory: the video takes in each process at least " in two.stdout, two.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["two.mp4"]
    frames = read_video(tmp_path / "two.mp4")[0]
    assert frames.shape == one_process_frames.shape
    assert abs(frames.astype(int) - one_process_frames).mean() < 0.2


def test_sequence_parallel_makes_the_same_frames(tmp_path, one_process_frames):
    """Split over two processes alone, the arithmetic is the single process's: the same frames."""
    two = _torchrun(tmp_path, "two.mp4", "--ulysses_size", "2")
    assert two.returncode == 0, two.stderr
    assert (read_video(tmp_path / "two.mp4")[0] == one_process_frames).all()


def test_a_batch_over_two_processes(tmp_path, one_process_frames):
    """Every video of a batch, a random seed's included (drawn by rank 0 for every process), made
    by both processes and written once by rank 0; the second the single process's."""
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"base_seed": -1, "save_file": "random.mp4"}\n{"save_file": "four.mp4"}\n')
    two = _torchrun(tmp_path, None, "--ulysses_size", "2", "--batch", str(batch))
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote ") == 3 and "batch: wrote 2 of 2 videos" in two.stdout, two.stdout
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["four.mp4", "random.mp4"]
    assert (read_video(tmp_path / "four.mp4")[0] == one_process_frames).all()

    # Run again after one video is lost: rank 0 finds the other, and every process skips it alone.
    (tmp_path / "random.mp4").unlink()
    again = _torchrun(tmp_path, None, "--ulysses_size", "2", "--batch", str(batch), "--skip_existing")
    assert again.returncode == 0, again.stderr
    assert "--batch line 2: four.mp4 exists; skipped (--skip_existing)" in again.stdout
    assert "batch: wrote 1 of 1 videos (line 2 skipped, the file exists)" in again.stdout, again.stdout


def test_the_first_process_of_each_machine_tells_what_its_files_lack(monkeypatch, ti2v_root, tmp_path,
                                                                     capsys):
    """Four processes on two machines: the files are each machine's, so the first process of the
    second machine tells what is missing there too; the others only what concerns them alone."""
    argv = ["--ckpt_dir", str(ti2v_root), "--device", "cpu", "--dit_fsdp",
            "--image", str(tmp_path / "no.png")]
    lines = {}
    for rank, local_rank in ((0, 0), (1, 1), (2, 0), (3, 1)):
        launch_env(monkeypatch, rank, 4, local_rank)
        assert main(argv) == 2
        lines[rank] = capsys.readouterr().err.splitlines()
    for rank in (0, 2):
        [line] = lines[rank]
        assert line.startswith(f"error: rank {rank}: --image {tmp_path / 'no.png'}"), line
    assert lines[1] == lines[3] == []


def test_only_the_writers_machine_checks_the_output_folder(monkeypatch, ti2v_root, tmp_path):
    """Rank 0 writes the video: another machine need not have its folder."""
    argv = ["--ckpt_dir", str(ti2v_root), "--device", "cpu", "--dit_fsdp",
            "--save_file", str(tmp_path / "only_on_the_first" / "v.mp4")]
    launch_env(monkeypatch, 2, 4, local_rank=0)
    assert _resolve(*argv).launch.rank == 2
    for rank in (0, 1):
        launch_env(monkeypatch, rank, 4)
        with pytest.raises(InvalidArguments, match="folder .*only_on_the_first does not exist"):
            _resolve(*argv)


def test_a_launch_without_its_rendezvous_is_refused(monkeypatch, ti2v_root):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    refused = ("WORLD_SIZE=2 describes a launch of several processes, but MASTER_ADDR and MASTER_PORT are "
               "not set; start them with torchrun")
    with pytest.raises(InvalidArguments, match=refused):
        _resolve("--ckpt_dir", str(ti2v_root), "--device", "cpu", "--dit_fsdp")


def test_the_demo_heads_are_checked_before_loading(monkeypatch):
    launch_env(monkeypatch, 0, 4)
    refused = "ulysses_size 4 does not divide the DiT's 2 attention heads, .*; launch a number of processes"
    with pytest.raises(InvalidArguments, match=refused):
        _resolve("--demo", "--ulysses_size", "4")


def test_a_process_left_by_another_says_so(monkeypatch, capsys):
    """The error of a collective whose peer left (after failing, its error told by itself) is not
    this process's failure."""
    def peer_gone(*args: object) -> int:
        raise RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by "
                           "peer [127.0.0.1]:2988. This is typically caused by a remote worker crashing.")

    monkeypatch.setattr(generate, "_generate", peer_gone)
    launch_env(monkeypatch, 0, 2)
    assert main(["--demo", "--ulysses_size", "2"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: rank 0: stopped: lost touch with another process of the launch "
                           "(RuntimeError: [/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] "
                           "Connection closed"), line
    assert line.endswith("; no video was written (if another process failed, its error is above)"), line


def _batch_failing_at_line_2(rank: int, ckpt_dir: str, folder: str) -> None:
    from wan_runtime.errors import NumericalError

    made = generate._make_video

    def nan_at_line_2(pipeline, job):
        if job.batch_line == 2:
            raise NumericalError("the latent turned NaN at step 1")
        return made(pipeline, job)

    generate._make_video = nan_at_line_2
    batch = Path(folder) / "jobs.jsonl"
    argv = ["--ckpt_dir", ckpt_dir, "--device", "cpu", "--frame_num", "5", "--sample_steps", "2",
            "--ulysses_size", "2", "--batch", str(batch)]
    torch.set_num_threads(1)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 1, err.getvalue()
    told = (f"error: rank {rank}: --batch line 2: the latent turned NaN at step 1; the batch stops there, as "
            "the processes of a torchrun launch go on together (run it again with --skip_existing not to "
            "make the videos written so far again)")
    assert [line for line in err.getvalue().splitlines() if "error" in line] == [told], err.getvalue()
    if rank == 0:
        assert "batch: wrote 1 of 3 videos (line 2 failed, above; line 3 not made)" in out.getvalue()


def test_a_batch_video_that_fails_under_torchrun_stops_the_batch_and_says_where(ti2v_root, tmp_path):
    lines = [{"save_file": str(tmp_path / f"v{n}.mp4"), "base_seed": n} for n in (1, 2, 3)]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    run_ranks(_batch_failing_at_line_2, 2, str(ti2v_root), str(tmp_path))
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["v1.mp4"]


def test_what_every_process_finds_alike_one_per_machine_tells(monkeypatch, capsys):
    """A flag argparse refuses, and the stop torchrun sends every process when one fails."""
    def stopped(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "_generate", stopped)
    told = {}
    for rank, local_rank in ((0, 0), (1, 1), (2, 0)):
        launch_env(monkeypatch, rank, 3, local_rank)
        with pytest.raises(SystemExit) as exited:
            main(["--demo", "--ulysses_size", "x"])
        assert exited.value.code == 2
        assert main(["--demo", "--dit_fsdp"]) == 130
        told[rank] = capsys.readouterr().err.splitlines()
    assert told[1] == []
    assert told[0][0] == told[2][0] == "error: argument --ulysses_size: invalid int value: 'x' (see --help)"
    assert told[2][1] == ("error: rank 2: stopped; no video was written (if another process failed, its "
                          "error is above)")
