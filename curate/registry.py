"""Every curate stage, declared once, in pipeline order.

A declaration says all the runner needs to know about a stage: its config section (also
its name in `drop_stage` and the funnel), the stage class, the options its section may
hold, the label columns it adds with their Arrow types, whether it loads a model (then it
runs in an actor pool and builds on the worker, never in the driver) and whether it is on
when its section is absent. From this one list the runner derives the order, the key
validation, the columns the rules may use and the output column types.

Adding a stage = its module (a `curate.stage.Stage` subclass) + one `StageSpec` line below
+ its section in default_config.yaml.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import pyarrow as pa

from schemas.options import check_keys, from_mapping

GLOBAL = "global"  # a stage over the whole dataset (dedup), not a batch function


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class StageSpec:
    key: str
    # "module:Class" of the Stage, imported only when the stage is built or checked, so a
    # disabled stage's heavy imports (torch, fasttext) never happen.
    stage: str
    # Label columns and their Arrow types: a mapping, or "module:NAME" of a mapping or of
    # a list of pyarrow fields.
    labels: Mapping[str, pa.DataType] | str = ()
    actor: bool = False
    # True / False, or "auto": on exactly when every stage in `needs` is on.
    default_enabled: bool | str = True
    # Stages whose labels this one reads (ppl_bucket reads perplexity's ppl): with one of
    # them off, an `auto` stage is off too and an explicitly enabled one is a config error.
    needs: tuple[str, ...] = ()
    # "module:Dataclass" whose fields are the section's keys, passed to the stage as one
    # object; None = the section's keys are the stage class's keyword arguments.
    options: str | None = None
    # Run-wide settings the stage also receives: keyword argument -> name in the run
    # settings the runner derives from the whole config (curate.pipeline.run_settings).
    run_settings: Mapping[str, str] = ()
    # Global stages: "module:function" called as function(ds, section, task_cpus) -> ds.
    run: str | None = None
    # Embedded default models: a `model_path` keyword -> "module:function() -> Path" that
    # builds (first use) or finds it. The key None names the model used when model_path is
    # null (for the model identity only).
    embedded: Mapping[str | None, str] = ()

    def label_types(self) -> dict[str, pa.DataType]:
        labels = _load(self.labels) if isinstance(self.labels, str) else self.labels
        if isinstance(labels, Mapping):
            return dict(labels)
        return {f.name: f.type for f in labels}

    @property
    def is_global(self) -> bool:
        return self.stage == GLOBAL

    def option_keys(self) -> list[str]:
        if self.options:
            return [f.name for f in fields(_load(self.options))]
        parameters = inspect.signature(_load(self.stage).__init__).parameters
        return [n for n, p in parameters.items()
                if n != "self" and n not in self.run_settings and p.kind is not p.VAR_KEYWORD]

    def check(self, section: dict) -> None:
        """Validate the section's keys (and an options dataclass's own checks) without
        building the stage: no model loads in the driver."""
        if self.is_global and not self.options:
            return
        if self.options:
            from_mapping(_load(self.options), section, self.key)
        else:
            check_keys(section, self.option_keys(), self.key)

    def check_files(self, section: dict) -> None:
        """A model the stage would load on a worker must exist: say so before any data is read.

        An embedded keyword (`reference`, `embedded`) is resolved here, in the driver: the
        model is built on first use and `section["model_path"]` becomes its path, so the
        workers only load it.
        """
        model_path = section.get("model_path")
        builders = dict(self.embedded)
        if isinstance(model_path, str) and model_path in builders:
            section["model_path"] = model_path = str(_load(builders[model_path])())
        if isinstance(model_path, str) and model_path and not _exists(model_path):
            raise FileNotFoundError(f"{self.key}.model_path: {model_path} does not exist")

    def model_identity(self, section: dict) -> str | None:
        """"<stage>: <model path> (sha256 <digest>)" of the model this section loads, if any."""
        model_path = section.get("model_path")
        builders = dict(self.embedded)
        if model_path is None and None in builders:
            model_path = str(_load(builders[None])())
        if not isinstance(model_path, str) or not model_path or not _exists(model_path):
            return None
        return f"{self.key}: {model_path} (sha256 {model_digest(model_path)})"

    def run_global(self, ds, section: dict, task_cpus: float | None):
        return _load(self.run)(ds, section, task_cpus)

    def factory(self, section: dict, run: Mapping[str, Any]) -> Callable[[], Any]:
        """A zero-argument constructor of the stage (called on the worker)."""
        extra = {kwarg: run[name] for kwarg, name in dict(self.run_settings).items()}
        return _Build(self.stage, self.options, dict(section), extra)


def model_digest(path: str) -> str:
    """sha256 of a model file, or of a model directory's files (names and contents, sorted)."""
    import hashlib
    from pathlib import Path

    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root) if file != root else file.name).encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def model_identities(stages: Mapping[str, dict]) -> list[str]:
    """Path + hash of every scorer the enabled stages load ({stage key: section}), for the
    accounting and the card."""
    out = []
    for spec in STAGES:
        if spec.key in stages and (identity := spec.model_identity(stages[spec.key])):
            out.append(identity)
    return out


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).expanduser().exists()


@dataclass(frozen=True)
class _Build:
    """Picklable stage constructor (Ray ships it to the workers)."""

    stage: str
    options: str | None
    section: dict
    extra: dict

    def __call__(self):
        cls = _load(self.stage)
        if self.options:
            # By keyword: a stage may keep another argument first (heuristics: its thresholds).
            return cls(config=from_mapping(_load(self.options), self.section, cls.name), **self.extra)
        return cls(**self.section, **self.extra)


_INT, _FLOAT, _STR = pa.int64(), pa.float64(), pa.string()

STAGES: tuple[StageSpec, ...] = (
    StageSpec("url_filter", "curate.url_filter:UrlFilterStage", options="curate.url_filter:UrlFilterConfig",
              labels={"domain": _STR, "url_score": _FLOAT, "url_block_reason": _STR}),
    StageSpec("extract", "curate.extract:ExtractStage", options="curate.extract:ExtractConfig",
              labels={"charset_used": _STR}),
    StageSpec("langid", "curate.langid:LangIdStage", options="curate.langid:LangIdConfig", actor=True,
              labels={"lang": _STR, "lang_score": _FLOAT}, embedded={None: "curate.langid:default_model_path"}),
    StageSpec("heuristics", "curate.heuristics:HeuristicsStage", options="curate.heuristics:HeuristicsConfig",
              labels="curate.heuristics:LABEL_TYPES", run_settings={"thresholds": "heuristic_thresholds"}),
    StageSpec("clean_lines", "curate.clean_lines:CleanLinesStage", options="curate.clean_lines:CleanLinesConfig",
              labels={"lines_removed": _INT}),
    StageSpec("pii", "curate.pii:PiiStage", options="curate.pii:PiiConfig",
              labels={"pii_email_count": _INT, "pii_ip_count": _INT, "pii_phone_count": _INT}),
    StageSpec("sensitive", "curate.sensitive:SensitiveStage", options="curate.sensitive:SensitiveConfig",
              labels={"sensitive_count": _INT, "sensitive_ratio": _FLOAT}),
    # Model labels sit together, so they fuse into the actor segment of langid.
    StageSpec("perplexity", "curate.perplexity:PerplexityStage", options="curate.perplexity:PerplexityConfig",
              actor=True, labels="curate.perplexity:LABEL_TYPES",
              embedded={"reference": "curate.reference_lm:reference_lm_path"}),
    StageSpec("quality", "curate.quality:QualityStage", options="curate.quality:QualityConfig", actor=True,
              labels={"quality_score": _FLOAT},
              embedded={"embedded": "curate.quality_default:embedded_quality_classifier"}),
    StageSpec("topic", "curate.quality:TopicStage", options="curate.quality:TopicConfig", actor=True,
              default_enabled=False, labels={"topic": _STR, "topic_score": _FLOAT}),
    StageSpec("ppl_bucket", GLOBAL, options="curate.ppl_buckets:BucketConfig", labels="curate.ppl_buckets:LABEL_TYPES",
              default_enabled="auto", needs=("perplexity",), run="curate.ppl_buckets:bucket_dataset"),
    StageSpec("filter", "curate.rules:RuleFilterStage", run_settings={"rules": "rules", "thresholds": "thresholds"}),
    # After the rules: a cluster's survivor is chosen among rows that pass them, so a
    # cluster never loses all its members to a rule that fires on the survivor alone.
    StageSpec("dedup", GLOBAL, labels="curate.dedup.survivor:LABEL_FIELDS", run="curate.pipeline:_run_dedup"),
    StageSpec("shaping", GLOBAL, options="curate.shaping:ShapingConfig", labels="curate.shaping:LABEL_TYPES",
              default_enabled=False, run="curate.shaping:shape_dataset"),
)

STAGE_ORDER: tuple[str, ...] = tuple(s.key for s in STAGES)
_BY_KEY = {s.key: s for s in STAGES}


def get_spec(key: str) -> StageSpec:
    return _BY_KEY[key]


def known_types() -> dict[str, pa.DataType]:
    """Arrow types of every column a stage can add (for all-null columns of a batch)."""
    types: dict[str, pa.DataType] = {}
    for spec in STAGES:
        types.update(spec.label_types())
    return types

