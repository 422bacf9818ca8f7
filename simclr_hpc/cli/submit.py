"""``simclr-hpc submit STAGE`` and ``simclr-hpc sweep STAGE`` (the task table's ``SWEEP_STAGES``): thin wrappers over ``simclr_hpc.launch``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from simclr_hpc import launch
from simclr_hpc.cli.common import ConfigOpt, SetOpt, user_errors
from simclr_hpc.config import load_config
from simclr_hpc.train.task_table import SWEEP_STAGES, stage_help

GpusOpt = Annotated[
    Optional[int],
    typer.Option(
        "--gpus-per-node", help="GPUs (= tasks) per node; 0 = CPU-only, one task per node. Default: the profile's."
    ),
]
TimeOpt = Annotated[
    Optional[str], typer.Option("--time", help="Time limit, Slurm format (e.g. 1-00:00:00). Default: the profile's.")
]
PartitionOpt = Annotated[
    Optional[str],
    typer.Option("--partition", help="Slurm partition. Default: the profile's, else the cluster's default."),
]
AccountOpt = Annotated[Optional[str], typer.Option("--account", help="Slurm account to charge.")]
QosOpt = Annotated[Optional[str], typer.Option("--qos", help="Slurm quality of service.")]
ConstraintOpt = Annotated[Optional[str], typer.Option("--constraint", help="Node feature constraint, e.g. 'a100&ib'.")]
ProfileOpt = Annotated[
    Optional[str], typer.Option("--profile", help="Site profile: configs/clusters/NAME.yaml, or a path.")
]
ContainerOpt = Annotated[
    Optional[str],
    typer.Option("--container", help="Apptainer image (.sif) every task runs in; 'none' ignores the profile's image."),
]
DependencyOpt = Annotated[
    Optional[list[str]],
    typer.Option("--dependency", help="afterok:JOBID[:JOBID...]: start after these jobs completed (repeatable)."),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Check everything, print the exact sbatch script(s); submit nothing. Works without Slurm."
    ),
]
ExecutorOpt = Annotated[str, typer.Option("--executor", help=launch.executor_help())]


@user_errors
def _submit(
    stage: str, config: Path | None, overrides: list[str], dry_run: bool, dependency: list[str] | None, **request_fields
) -> None:
    cfg = load_config(config, overrides, stage=stage)
    request = launch.make_request(**request_fields)
    if dry_run:
        print(launch.render_stage(stage, cfg, request, dependency), end="")
        return
    record = launch.submit_stage(stage, cfg, request, dependency)
    print(
        f"submitted {stage} run {record.run_name}: job {record.job_id} ({record.executor}, {record.nodes} node(s), "
        f"{record.tasks} task(s))"
    )
    print(f"  run dir: {record.run_dir}")
    print(f"  log:     {record.stdout}")


def submit(
    stage: Annotated[str, typer.Argument(help=stage_help())],
    config: ConfigOpt = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes of the job.")] = 1,
    gpus_per_node: GpusOpt = None,
    time: TimeOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    qos: QosOpt = None,
    constraint: ConstraintOpt = None,
    profile: ProfileOpt = None,
    container: ContainerOpt = None,
    dependency: DependencyOpt = None,
    dry_run: DryRunOpt = False,
    executor: ExecutorOpt = launch.CLUSTER,
    set_: SetOpt = None,
) -> None:
    """Submit one run of STAGE as a batch job: one task per GPU, USR2 before the time limit, requeue. Never waits."""
    _submit(
        stage,
        config,
        set_ or [],
        dry_run,
        dependency,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        time=time,
        partition=partition,
        account=account,
        qos=qos,
        constraint=constraint,
        profile=profile,
        container=container,
        executor=executor,
    )


@user_errors
def _sweep(
    stage: str,
    study: Path,
    manifest: Path | None,
    force: bool,
    dry_run: bool,
    parallelism: int | None,
    dependency: list[str] | None,
    include_done: bool,
    **request_fields,
) -> None:
    from simclr_hpc.study.pipeline import sweep_configs

    if stage not in SWEEP_STAGES:
        raise launch.LaunchError(
            f"sweep {stage}: use one of {', '.join(SWEEP_STAGES)} (the other stages run one "
            f"job per run: `simclr-hpc submit {stage}`)"
        )
    cfgs, done = sweep_configs(study, stage, include_done)
    if done:
        print(f"skipping {done} finished run(s) (result.json present); --include-done to rerun them")
    if not cfgs:
        print(f"nothing to do: every {stage} run of {study} is finished")
        return
    if manifest is not None:
        path = launch.write_manifest(stage, cfgs, manifest, force)
        print(
            f"wrote {path}: {len(cfgs)} line(s); submit with "
            f"sbatch --array=0-{len(cfgs) - 1}%{parallelism or 8} slurm/array.sbatch {shlex.quote(str(path))}"
        )
        return
    request = launch.make_request(**request_fields)
    if dry_run:
        print("\n".join(launch.render_array(stage, cfgs, request, parallelism, dependency)), end="")
        return
    records = launch.submit_array(stage, cfgs, request, parallelism, dependency)
    arrays = sorted({r.array_job_id or r.job_id for r in records})
    print(f"submitted {len(records)} {stage} run(s) as array job(s) {', '.join(arrays)}")
    for rec in records:
        print(f"  {rec.job_id}  {rec.run_name}")


def sweep(
    stage: Annotated[str, typer.Argument(help=stage_help(SWEEP_STAGES))],
    study: Annotated[Path, typer.Option("-c", "--study", help="Study file (configs/studies/*.yaml).")],
    manifest: Annotated[
        Optional[Path],
        typer.Option("--manifest", help="Write a manifest for slurm/array.sbatch instead of submitting."),
    ] = None,
    parallelism: Annotated[
        Optional[int], typer.Option("--parallelism", help="Array tasks running at once. Default: the profile's.")
    ] = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes of each array task.")] = 1,
    gpus_per_node: GpusOpt = None,
    time: TimeOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    qos: QosOpt = None,
    constraint: ConstraintOpt = None,
    profile: ProfileOpt = None,
    container: ContainerOpt = None,
    dependency: DependencyOpt = None,
    dry_run: DryRunOpt = False,
    executor: ExecutorOpt = launch.CLUSTER,
    include_done: Annotated[
        bool, typer.Option("--include-done", help="Also resubmit runs that already have result.json.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --manifest file.")] = False,
) -> None:
    """Submit one Slurm array for every run of a study's sweep (or write a manifest for slurm/array.sbatch)."""
    _sweep(
        stage,
        study,
        manifest,
        force,
        dry_run,
        parallelism,
        dependency,
        include_done,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        time=time,
        partition=partition,
        account=account,
        qos=qos,
        constraint=constraint,
        profile=profile,
        container=container,
        executor=executor,
    )


def register(app: typer.Typer) -> None:
    """Add ``submit`` and ``sweep`` to the app."""
    app.command("submit")(submit)
    app.command("sweep")(sweep)
