"""``rbm-tune evaluate``: the K best configs of a study over S new seeds, as a paper table.

A study picks its best config on one seed's validation accuracy; the number to publish is the
mean ± std over seeds of the test accuracy at the best-validation epoch, next to the teacher,
GLNN and a plain MLP on the same seeds. The table's first line is the verdict
(rbm_tune/verdict.py): the winning graph-free student, its margin over the strongest rival and
a paired test over the seeds. This command re-runs:

- each of the study's K best *finished* trials' configs (``trials.json``, best first);
- GLNN: the best config's student as an MLP of the same depth and width, distilled from the
  same teacher with the same label weight and temperature, without the extras;
- the plain MLP: the best config's student as an MLP of the same depth and width, trained on the
  labels only (``label_weight: 1``, no positional encoding, no adversarial or similarity terms);
- the teacher: every run above reports its teacher's numbers; there is one teacher per seed,
  resolved once on the driver's side before the runs start (the cache, or one Ray task that
  trains it and is written back to the driver's cache: rbm_tune/study/teacher_task.py) and
  shipped to that seed's runs through Ray's object store;

over the seeds ``study seed + 1 .. study seed + S`` (new data splits where the dataset's split
is seeded, new teachers, new students), each run one Ray task. The table goes to stdout and, as
``evaluate-top{K}-seeds{S}.md``, to the study's parent MLflow run, with every run's numbers
beside it in ``evaluate-top{K}-seeds{S}.json``. ``--set KEY=VALUE`` changes every re-run
config (e.g. ``distill.max_epochs``), checked as a config file is; those files then end in
``-set-<hash>`` and the table says what was set. ``--select mean-val`` then makes the re-run
config with the best mean *validation* accuracy over those seeds the study's
``best_config.yaml`` (rbm_tune/selection.py; ``--select search`` puts the search's back).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rbm_tune.errors import ConfigError, RbmTuneError
from rbm_tune.evaluate_table import describe_config, format_table, per_run
from rbm_tune.overrides import Override, apply, blame, parse_overrides
from rbm_tune.placement import NoCudaError
from rbm_tune.selection import MEAN_VAL, SELECTIONS, select_and_adopt, selection_tags
from rbm_tune.verdict import GLNN, PLAIN_MLP, TEACHER

__all__ = ["evaluate_command", "evaluate_study", "format_table", "glnn", "plain_mlp"]

# the extras GLNN's distilled MLP does not have (positional encoding, adversarial, similarity
# and KRD terms) and the RbM's pretraining phase, all off
_PLAIN_DISTILL = {
    "pretrain_epochs": 0,
    "positional_encoding": False,
    "adv_augment": False,
    "similarity_distill": False,
    "reliable_sampling": False,
}


def plain_mlp(config: Any) -> Any:
    """The no-distillation baseline of ``config``: its student as an MLP trained on labels."""
    return config.replace(
        student={"model": "mlp"}, distill={**_PLAIN_DISTILL, "label_weight": 1.0}
    )


def glnn(config: Any) -> Any:
    """GLNN (Zhang et al. 2022) for ``config``: its student as an MLP of the same depth and
    width, distilled from the same teacher with the config's label weight and temperature, and
    none of the extras: the baseline RbM exists to beat."""
    return config.replace(student={"model": "mlp"}, distill=dict(_PLAIN_DISTILL))


def _run(
    config_dict: dict[str, Any],
    data_root: str | None,
    cache_dir: str | None,
    cpu_fallback: bool = False,
    teacher: Any = None,
) -> dict:
    """One Ray task: a whole trial with the seed's teacher the driver resolved (shipped through
    the object store), on the device Ray assigned the task (rbm_tune.placement) with the CPUs
    it gave."""
    import sys

    from rbm_tune.config import TrialConfig
    from rbm_tune.placement import from_ray
    from rbm_tune.trial import run_trial

    placement = from_ray(cpu_fallback=cpu_fallback, what="evaluate task")
    if placement.warning:
        print(placement.warning, file=sys.stderr)
    result = run_trial(
        TrialConfig.from_mapping(config_dict),
        data_root=data_root,
        cache_dir=cache_dir,
        device=placement.device,
        teacher=teacher,
    )
    return result.to_dict()


def _seed_teachers(
    variants: list[Any],
    seeds: list[int],
    *,
    data_root: str | None,
    cache_dir: str | None,
    cpu_fallback: bool,
    log: Callable[[str], None],
) -> dict[tuple[int, int], Any]:
    """Each seed's teacher resolved once on the driver's side (the cache, or one Ray task that
    trains it and is written back), put in the object store once: ``(variant, seed) -> ref``.

    The driver loads each seed's graph in turn (its split fixes the teacher's key) and keeps
    none of them; the tasks read their data on their own node as before.
    """
    import ray

    from rbm_tune.data import load_graph
    from rbm_tune.study.teacher_task import resolve_teacher
    from rbm_tune.teacher_cache import TeacherKey, check_cache_dir

    cache = check_cache_dir(cache_dir)
    refs: dict[tuple[int, int], Any] = {}
    by_key: dict[str, Any] = {}
    for seed in seeds:
        graphs: dict[tuple[str, str], Any] = {}
        for v, config in enumerate(variants):
            where = (config.dataset, config.setting)
            if where not in graphs:
                graphs[where] = load_graph(
                    config.dataset, root=data_root, setting=config.setting, seed=seed,
                    cache_dir=cache_dir,
                )  # fmt: skip
            key = TeacherKey.of(graphs[where], config.teacher, seed=seed)
            if key.digest not in by_key:
                teacher, trained = resolve_teacher(
                    cache,
                    key,
                    config.teacher,
                    graphs[where],
                    seed,
                    cpu_fallback=cpu_fallback,
                    log=log,
                )
                how = "trained" if trained else "from cache"
                log(f"teacher {key.digest[:12]} for seed {seed} ({how})")
                by_key[key.digest] = ray.put(teacher)
            refs[(v, seed)] = by_key[key.digest]
    return refs


def study_resources(folder: Path) -> dict[str, Any]:
    """The resources the study's trials asked for (``study.json``, written by its summary):
    what each evaluation run asks Ray for. A study written before ``study.json`` existed: one
    CPU, no GPU."""
    path = folder / "study.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    return {
        "num_cpus": float(settings.get("cpus_per_trial", 1)),
        "num_gpus": float(settings.get("gpus_per_trial", 0)),
        "cpu_fallback": bool(settings.get("cpu_fallback", False)),
    }


def evaluate_study(
    name: str,
    *,
    top: int,
    seeds: int,
    storage: Path,
    data_root: str | None = None,
    cache_dir: str | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    cpus: int | None = None,
    overrides: Sequence[str] = (),
    select: str | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Run the evaluation (module docstring) and return the markdown table.

    ``select``: None leaves ``best_config.yaml`` alone; ``mean-val`` makes the re-run config
    with the best mean validation accuracy over the new seeds the study's best, ``search``
    puts the search's choice back (rbm_tune.selection).

    Raises:
        ConfigError: no such study, or bad ``top`` / ``seeds`` / ``select``.
    """
    import ray
    from mlflow.tracking import MlflowClient

    from rbm_tune.study.ray_session import check_address, init_ray
    from rbm_tune.tracking import ROLE_TAG, check_reachable, resolve_tracking_uri

    if top < 1 or seeds < 1:
        raise ConfigError(f"--top {top} and --seeds {seeds} must both be >= 1")
    changes = parse_overrides(overrides, space=False)
    _check_select(select, overrides)
    path = storage / name / "trials.json"
    if not path.is_file():
        raise ConfigError(
            f"no finished study {name!r} in {storage} (no trials.json); check --name / "
            "--storage-path"
        )
    finished = [t for t in json.loads(path.read_text()) if not t["asha_stopped"]]
    if not finished:
        raise ConfigError(f"study {name!r} has no finished trial to evaluate")
    chosen = finished[:top]
    if len(chosen) < top:
        log(f"rbm-tune: note: study {name!r} has only {len(chosen)} finished trial(s)")
    configs = [_config(t["config"], changes) for t in chosen]
    base = configs[0].seed
    seed_list = [base + i for i in range(1, seeds + 1)]
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    if address:
        check_address(address)
    init_ray(address, cpus, None)

    cache = None if cache_dir is None else str(cache_dir)
    root = None if data_root is None else str(data_root)
    asked = study_resources(storage / name)
    fallback = asked.pop("cpu_fallback")
    if asked["num_gpus"] > 0 and ray.cluster_resources().get("GPU", 0) == 0:
        asked["num_gpus"] = 0  # as the study did: a machine with no GPU runs it on CPUs
    task = ray.remote(**asked)(_run)
    jobs: dict[tuple[int, int], Any] = {}
    variants = [plain_mlp(configs[0]), glnn(configs[0]), *configs]
    try:
        teachers = _seed_teachers(
            variants, seed_list, data_root=root, cache_dir=cache, cpu_fallback=fallback, log=log
        )
    except NoCudaError as err:
        raise RbmTuneError(str(err)) from None
    for seed in seed_list:
        for v, config in enumerate(variants):
            config_dict = config.replace(seed=seed).to_dict()
            jobs[(v, seed)] = task.remote(config_dict, root, cache, fallback, teachers[(v, seed)])
    log(
        f"evaluating {len(configs)} config(s) + GLNN + plain MLP over seeds {seed_list}: "
        f"{len(jobs)} runs as Ray tasks"
    )
    try:
        done = {k: ray.get(ref) for k, ref in jobs.items()}
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, NoCudaError):  # one line naming the fix, not a traceback
            raise RbmTuneError(str(err.cause)) from None
        raise

    rows: list[tuple[str, str, list[dict[str, Any]]]] = [
        (TEACHER, configs[0].teacher.model, [done[(2, s)] for s in seed_list]),
        (GLNN, describe_config(variants[1]), [done[(1, s)] for s in seed_list]),
        (PLAIN_MLP, describe_config(variants[0]), [done[(0, s)] for s in seed_list]),
    ]
    for i, (trial, config) in enumerate(zip(chosen, configs, strict=True), start=1):
        label = f"#{i} trial {trial['trial_id']}"
        rows.append((label, describe_config(config), [done[(i + 1, s)] for s in seed_list]))
    table = format_table(name, seed_list, rows)
    selected = None
    if select is not None:  # validation accuracy only: the rows' test numbers are not read
        selected, line = select_and_adopt(
            storage / name, select, trials=chosen, configs=configs,
            runs=[r for _, _, r in rows[3:]], seeds=seed_list,
            evaluate_file=f"evaluate-top{top}-seeds{seeds}.md",
        )  # fmt: skip
        table = f"{table}\n\n{line}"

    out = storage / name / f"evaluate-top{top}-seeds{seeds}{_set_suffix(changes)}.md"
    if changes:
        table = f"with {' '.join(f'--set {c}' for c in changes)}\n\n{table}"
    out.write_text(table + "\n")
    # every run's numbers, for other statistics than mean ± std (tests, significance, plots)
    numbers = out.with_suffix(".json")
    numbers.write_text(json.dumps(per_run(name, seed_list, rows), indent=1) + "\n")
    client = MlflowClient(uri)  # not a Tracker: that would reopen the study's parent run
    experiment = client.get_experiment_by_name(name)
    parents = (
        client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study'",
            max_results=1,
        )
        if experiment is not None
        else []
    )
    if parents:
        client.log_artifact(parents[0].info.run_id, str(out))
        client.log_artifact(parents[0].info.run_id, str(numbers))
        tags = selection_tags(selected) if selected is not None else {}
        for key, value in tags.items():  # which config best_config.yaml holds now, and why
            client.set_tag(parents[0].info.run_id, key, value)
    else:
        log(f"rbm-tune: note: no MLflow study run {name!r} at {uri}; the table is in {out}")
    return table


def _check_select(select: str | None, overrides: Sequence[str]) -> None:
    """``--select``: a known rule, and not with ``--set`` (it picks among the study's own
    configs, not changed ones)."""
    if select is not None and select not in SELECTIONS:
        raise ConfigError(f"--select {select!r} is unknown; choose one of {list(SELECTIONS)}")
    if select == MEAN_VAL and overrides:
        raise ConfigError(
            "--select mean-val chooses among the study's own configs; drop --set (or run "
            "evaluate again without it to select)"
        )


def _config(values: dict[str, Any], changes: Sequence[Override]) -> Any:
    """A trial's config from ``trials.json`` with the ``--set`` changes, validated."""
    from rbm_tune.config import TrialConfig

    try:
        return TrialConfig.from_mapping(apply(values, changes, space=False))
    except ConfigError as err:
        raise blame(err, changes, "") from None


def _set_suffix(changes: Sequence[Override]) -> str:
    """``-set-<8 hex>`` naming the changes (none: ``""``): a table with other settings does
    not overwrite the study's own."""
    if not changes:
        return ""
    text = "\0".join(f"{c.key}={c.text}" for c in changes)
    return f"-set-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def evaluate_command(args: Any) -> int:
    """``rbm-tune evaluate``: the table on stdout, progress on stderr."""
    import sys

    from rbm_tune.paths import resolve_storage
    from rbm_tune.storage import local_study, push, remote_storage

    parse_overrides(args.overrides, space=False)  # a bad --set: one line before Ray loads
    _check_select(getattr(args, "select", None), args.overrides or ())
    storage = resolve_storage(args.storage_path)
    folder = local_study(args.storage_path, args.name)  # an object store's: pulled into a mirror
    table = evaluate_study(
        args.name,
        top=args.top,
        seeds=args.seeds,
        storage=storage,
        data_root=args.data_root,
        cache_dir=args.cache_dir,
        tracking_uri=args.tracking_uri,
        address=args.address,
        cpus=args.cpus,
        overrides=args.overrides or (),
        select=getattr(args, "select", None),
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    remote = remote_storage(args.storage_path)
    if remote:  # the table, its numbers and a --select's best config back to the object store
        push(folder, remote, args.name)
    print(table)
    return 0
