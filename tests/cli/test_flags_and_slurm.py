"""One flag style across compare, sweep and report; sweep overrides anywhere; SLURM options as
hydra-submitit names them, checked in the sbatch file submitit would write (no cluster needed)."""

import pytest

from optimlab.errors import ConfigError
from optimlab.sweep.cli import _sweep_parser, flags_as_keys, parse_slurm_extra
from optimlab.sweep.compare import parse_compare_args


def test_compare_accepts_the_sweep_and_report_flags():
    argv = ["optims=[sgd]", "--workers", "2", "--out=rep", "--root", "r", "--backend", "local", "--no-progress",
            "train.steps=5"]
    args = parse_compare_args(flags_as_keys(argv))
    assert (args.workers, args.out, args.root, args.backend, args.progress) == (2, "rep", "r", "local", False)
    assert args.overrides == ["train.steps=5"]
    with pytest.raises(ConfigError, match="unknown compare option --wrokers; did you mean workers"):
        flags_as_keys(["--wrokers", "2"])
    with pytest.raises(ConfigError, match="--out expects a value"):
        flags_as_keys(["--out"])


def test_sweep_takes_overrides_anywhere_and_defaults_workers_to_the_cores():
    args = _sweep_parser().parse_intermixed_args(["example", "--root", "r", "train.steps=5", "--dry-run", "seed=1"])
    assert args.spec == "example" and args.overrides == ["train.steps=5", "seed=1"] and args.dry_run
    assert args.workers is None  # sweep_main turns it into the usable CPU count


def test_slurm_options_reach_the_sbatch_file(tmp_path):
    submitit = pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from optimlab.sweep.slurm import SlurmBackend

    args = _sweep_parser().parse_intermixed_args(
        ["example", "--backend", "slurm", "--slurm-mem", "16G", "--slurm-account", "proj", "--slurm-qos", "high",
         "--slurm-constraint", "a100", "--slurm-setup", "module load cuda", "--slurm-setup", "source env/bin/activate",
         "--slurm-extra", "reservation=r1", "--slurm-extra", "mail-type=END", "--slurm-partition", "gpu"])
    backend = SlurmBackend(tmp_path, cluster="local", partition=args.slurm_partition, mem=args.slurm_mem,
                           account=args.slurm_account, qos=args.slurm_qos, constraint=args.slurm_constraint,
                           setup=args.slurm_setup, extra=parse_slurm_extra(args.slurm_extra))
    params = backend.slurm_parameters()
    assert set(params) <= set(submitit.SlurmExecutor._valid_parameters())  # names submitit accepts
    text = _make_sbatch_string(command="python job.py", folder=tmp_path, **params)
    for line in ["#SBATCH --mem=16G", "#SBATCH --account=proj", "#SBATCH --qos=high", "#SBATCH --constraint=a100",
                 "#SBATCH --partition=gpu", "#SBATCH --reservation=r1", "#SBATCH --mail-type=END"]:
        assert line in text, line
    assert text.index("module load cuda") < text.index("source env/bin/activate") < text.index("python job.py")
    with pytest.raises(ConfigError, match="--slurm-extra: expected KEY=VALUE"):
        parse_slurm_extra(["reservation"])
