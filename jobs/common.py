"""Command-line plumbing shared by every job: YAML config + `key=value` overrides, Ray start-up."""
from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge `update` into a copy of `base` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(config: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML: {exc}") from None
    node = config
    for key in keys[:-1]:
        if not isinstance(node.setdefault(key, {}), dict):
            raise ConfigError(f"override {assignment!r}: {key!r} is not a mapping")
        node = node[key]
    node[keys[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] | None = None, defaults: dict | None = None) -> dict:
    """defaults <- YAML file <- overrides."""
    config = copy.deepcopy(defaults or {})
    if path:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        config = deep_merge(config, loaded)
    for assignment in overrides or []:
        apply_override(config, assignment)
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's own log lines and per-operator progress (default: they go to the run's log file)")
    parser.add_argument("overrides", nargs="*", default=[], help="key=value overrides, e.g. filter.min_words=80")


RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air", "ray.serve")
# Library warnings every run printed and no user can act on: bitsandbytes' CPU backend
# announces at import that it could not fetch an optional hub kernel ("kernels-community").
QUIET_LIBRARY_LOGGERS = ("bitsandbytes.backends.cpu.ops",)
RAY_LOG_FILE = "ray.log"


def log_dir_for(output: str | Path, dataset: bool = True) -> Path:
    """Where a job's Ray logs go: `OUTPUT.logs/` beside a dataset directory (a dataset is
    written atomically, so a failed run would take logs kept inside it along), `RUN/logs/`
    inside a training run directory."""
    output = Path(output)
    return output.with_name(output.name + ".logs") if dataset else output / "logs"


def quiet_console(log_dir: str | Path | None, verbose: bool = False) -> Path | None:
    """Send Ray's Python log lines (start-up notices, Ray Data's plans and progress lines) to
    `log_dir/ray.log` instead of the console; errors still reach stderr. `verbose` leaves
    Ray's console output as it is (and still writes the file). Returns the log file."""
    import logging
    import sys

    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not verbose:
        import warnings

        # Ray Data's notice that it passes our per-operator CPU request on as ray_remote_args:
        # for Ray's developers, shown on every run, nothing a user can change (-v shows it).
        warnings.filterwarnings("ignore", message=r".*`ray_remote_args` is deprecated")
    if log_dir is None:
        return None
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / RAY_LOG_FILE
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_file.setLevel(logging.INFO)  # Ray Data logs DEBUG lines per block
    to_file.set_name("raymill-ray-log")
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.ERROR)
    errors.set_name("raymill-ray-errors")
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if handler.get_name() in ("raymill-ray-log", "raymill-ray-errors"):
                logger.removeHandler(handler)  # called again (a second job in one process)
            elif not verbose and isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.addHandler(to_file)
        if not verbose:
            logger.addHandler(errors)
            logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    if not verbose:
        _native_stderr_to(path)
    return path


_NATIVE_STDERR_MOVED = False


def _native_stderr_to(path: Path) -> None:
    """In a terminal, point file descriptor 2 at the log file and keep Python's sys.stderr on
    the terminal: Ray's C++ core worker writes its own ERROR lines (e.g. the actor-restart
    notice every Ray Data actor pool triggers) straight to fd 2, past Python's logging.
    Tracebacks, our error lines and progress bars use sys.stderr and still show. Off the
    terminal (pipes, pytest, `ray job submit`) nothing changes."""
    import sys

    global _NATIVE_STDERR_MOVED
    if _NATIVE_STDERR_MOVED or not hasattr(sys.stderr, "isatty") or not sys.stderr.isatty():
        return
    try:
        terminal = os.dup(2)
        log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        sys.stderr.flush()
        os.dup2(log_fd, 2)
        os.close(log_fd)
        sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
        _NATIVE_STDERR_MOVED = True
    except OSError:
        pass


def configure_ray_data_console(verbose: bool = False) -> None:
    """One progress bar per Ray Data execution (rows, rate, ETA) instead of one per operator
    plus the execution plan; `verbose` restores Ray Data's own output."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_operator_progress_bars = verbose
    ctx.print_on_execution_start = verbose


def init_ray(num_cpus: int | None = None, *, log_dir: str | Path | None = None, verbose: bool = False,
             dashboard: bool | None = None) -> bool:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), else start an embedded Ray.
    Returns True when this call started that embedded Ray (the caller then owns it), False
    when it joined a cluster or Ray was already initialised.

    Embedded Ray starts without the dashboard unless asked (`dashboard=True` or
    RAYMILL_DASHBOARD=1): its nine head modules are separate processes that cost ~1-2 s of
    CPU at every start (bench/bench_curate_throughput.py --only startup) and a laptop job
    has no one looking at them. Ray's log lines go to `log_dir/ray.log` (see quiet_console);
    workers' stdout/stderr stay in Ray's session logs unless `verbose`.
    """
    import ray

    if ray.is_initialized():
        return False
    if dashboard is None:
        dashboard = os.environ.get("RAYMILL_DASHBOARD", "") not in ("", "0")
    quiet_console(log_dir, verbose)
    kwargs: dict[str, Any] = {"log_to_driver": verbose or log_dir is None}
    embedded = not os.environ.get("RAY_ADDRESS")
    if embedded:
        # Ray starts workers at niceness 15 (RAY_worker_niceness): on a shared CPU box the embedded
        # job's trainer and pipeline actors would run at the lowest priority against every other
        # process (measured: the main cause of raymill's slower steps beside TRL under load).
        os.environ.setdefault("RAY_worker_niceness", "0")
        # Ray Train V2's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s), and
        # needs a poll for the last report and one more to see the train function return: ~4 s of a
        # short run spent waiting after the last step (measured, issue 17). On one local node a poll
        # is a cheap local RPC; a cluster job keeps Ray's defaults.
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
        # Ray Train V2 starts a PreemptionWatcher actor per worker group to log node drains; an
        # embedded Ray is this one machine, which nobody drains: one Python process less to start
        # on the cores the trainer is about to use.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        # address="local": a plain ray.init() would join any `ray start` cluster left on this
        # machine and then refuse num_cpus; without RAY_ADDRESS the job is documented as embedded.
        kwargs["address"] = "local"
        kwargs["include_dashboard"] = dashboard
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    if log_dir is not None:
        # ray.init and `import ray.data` install console handlers of their own: route them too.
        import ray.data  # noqa: F401

        quiet_console(log_dir, verbose)
        configure_ray_data_console(verbose)
        _link_session_logs(Path(log_dir))
    return embedded


def _link_session_logs(log_dir: Path) -> None:
    """`log_dir/ray-session` -> this Ray session's log directory (workers' output, raylet ...)."""
    try:
        import ray

        session = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    except Exception:  # noqa: BLE001 - joined clusters keep their logs on the head node
        return
    link = log_dir / "ray-session"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(session, target_is_directory=True)
    except OSError:
        pass


def format_funnel(stages, title: str | None = None) -> str:
    """The run's funnel as a table, like datatrove's closing stats: per stage rows in, kept,
    dropped (by reason) and seconds. `stages` are schemas.funnel.StageCount rows."""
    rows = [("stage", "in", "kept", "dropped", "seconds", "dropped by reason")]
    for s in stages:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(s.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
        rows.append((s.stage, str(s.rows_in), str(s.kept), str(sum(s.dropped.values())),
                     f"{s.seconds:.1f}" if s.seconds else "-", reasons))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [title] if title else []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)] + [r[5]]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 17)
    return "\n".join(lines)


def run_main(main) -> None:
    """Run a job's main(); turn expected user errors into one clear line and exit code 2."""
    import sys

    try:
        main()
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
