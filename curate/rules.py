"""The declarative keep/drop rule set: named boolean expressions over label columns.

A rule is `{name: gopher_min_words, expr: "gopher_word_count >= t.gopher_min_words"}`.
A row is kept when every rule holds; otherwise it is dropped with `drop_reason` = the
name of the FIRST rule (in config order) that does not hold, and all labels stay.

Expression language (parsed with `ast`, never `eval`; evaluated with pyarrow.compute over
the whole batch):
- column names; `t.<name>` for a threshold constant (defaults in
  `curate.heuristics.Thresholds`, overridable in the config);
- numbers, strings, True/False/None, lists/tuples of literals (for `in`);
- comparisons `== != < <= > >=` (chains allowed), `in` / `not in`, `is None` / `is not None`;
- `and`, `or`, `not`, unary minus, and `+ - * /` between numbers/columns.

Per-language thresholds: a threshold named `<name>@<lang>` (e.g.
`fineweb_min_line_punct_ratio@zh`, defaults in `curate.heuristics.LANGUAGE_THRESHOLDS`)
replaces `t.<name>` for the rows whose `lang` label is <lang>; other rows, and tables
without a `lang` column, use `t.<name>`. So one rule serves every language.

Nulls follow SQL: a comparison with a null label is null, `and`/`or` use Kleene logic,
and a rule whose result is null does NOT hold (the row is dropped with the rule's name).
Write `x is None or x >= 3` for a label that may be absent on purpose (e.g. the mean
word length of CJK text). An expression naming a column the table lacks is a
`RuleError` naming the rule and the column.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from curate.stage import Stage, mark_drops

THRESHOLD_NAMESPACE = "t"
# Per-language thresholds: `<name>@<lang>` overrides `t.<name>` for rows whose `lang` is <lang>.
LANG_SEPARATOR = "@"
LANG_COLUMN = "lang"


class RuleError(ValueError):
    """A rule cannot be parsed or evaluated; the message names the rule."""


_COMPARE = {
    ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
    ast.Gt: pc.greater, ast.GtE: pc.greater_equal,
}
def _true_divide(left, right):
    """Python's `/`: always a float division (pyarrow divides integers as integers)."""
    return pc.divide(pc.cast(left, pa.float64()), pc.cast(right, pa.float64()))


_ARITH = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: _true_divide}

Value = Any  # pa.Array / pa.ChunkedArray / pa.Scalar / python literal list


@dataclass
class Rule:
    name: str
    expr: str
    tree: ast.expr
    columns: frozenset[str]


def _literal(node: ast.expr, rule: str) -> Any:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (int, float, str, bool))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, rule)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    raise RuleError(f"rule {rule!r}: list items must be literals (numbers, strings), got {ast.unparse(node)!r}")


def _check(node: ast.AST, rule: str, thresholds: dict, columns: set[str]) -> None:
    """Refuse every syntax outside the whitelist; collect column names."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, (ast.And, ast.Or)):
        for v in node.values:
            _check(v, rule, thresholds, columns)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        _check(node.operand, rule, thresholds, columns)
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        _check(node.left, rule, thresholds, columns)
        _check(node.right, rule, thresholds, columns)
    elif isinstance(node, ast.Compare):
        _check(node.left, rule, thresholds, columns)
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.List, ast.Tuple)):
                    raise RuleError(f"rule {rule!r}: the right side of 'in' must be a list of literals")
                for item in right.elts:
                    _literal(item, rule)
            elif isinstance(op, (ast.Is, ast.IsNot)):
                if not (isinstance(right, ast.Constant) and right.value is None):
                    raise RuleError(f"rule {rule!r}: 'is' / 'is not' may only compare with None")
            elif type(op) in _COMPARE:
                _check(right, rule, thresholds, columns)
            else:
                raise RuleError(f"rule {rule!r}: comparison {type(op).__name__} is not allowed")
    elif isinstance(node, ast.Name):
        if node.id in (THRESHOLD_NAMESPACE,):
            raise RuleError(f"rule {rule!r}: use {THRESHOLD_NAMESPACE}.<threshold name>")
        columns.add(node.id)
    elif isinstance(node, ast.Attribute):
        if not (isinstance(node.value, ast.Name) and node.value.id == THRESHOLD_NAMESPACE):
            raise RuleError(f"rule {rule!r}: attribute access {ast.unparse(node)!r} is not allowed "
                            f"(only {THRESHOLD_NAMESPACE}.<threshold>)")
        if node.attr not in thresholds:
            raise RuleError(f"rule {rule!r}: unknown threshold {THRESHOLD_NAMESPACE}.{node.attr} "
                            f"(known: {', '.join(sorted(thresholds))})")
    elif isinstance(node, ast.Constant):
        if not (node.value is None or isinstance(node.value, (int, float, str, bool))):
            raise RuleError(f"rule {rule!r}: constant {node.value!r} is not allowed")
    else:
        raise RuleError(f"rule {rule!r}: {type(node).__name__} ({ast.unparse(node)!r}) is not allowed in rules")


def parse_rule(name: str, expr: str, thresholds: dict | None = None) -> Rule:
    if not isinstance(name, str) or not name.strip():
        raise RuleError(f"every rule needs a non-empty name (got {name!r} for {expr!r})")
    if not isinstance(expr, str) or not expr.strip():
        raise RuleError(f"rule {name!r}: expr must be a non-empty string")
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError as exc:
        raise RuleError(f"rule {name!r}: cannot parse {expr!r}: {exc.msg}") from None
    columns: set[str] = set()
    _check(tree, name, thresholds or {}, columns)
    return Rule(name, expr, tree, frozenset(columns))


class _Evaluator:
    def __init__(self, table: pa.Table, rule: Rule, thresholds: dict):
        self.table, self.rule, self.thresholds = table, rule, thresholds

    def error(self, problem: str) -> RuleError:
        return RuleError(f"rule {self.rule.name!r} ({self.rule.expr}): {problem}")

    def __call__(self, node: ast.expr) -> Value:
        if isinstance(node, ast.BoolOp):
            fn = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
            result = self._bool(self(node.values[0]))
            for v in node.values[1:]:
                result = fn(result, self._bool(self(v)))
            return result
        if isinstance(node, ast.UnaryOp):
            value = self(node.operand)
            return pc.invert(self._bool(value)) if isinstance(node.op, ast.Not) else pc.negate(value)
        if isinstance(node, ast.BinOp):
            return self._apply(_ARITH[type(node.op)], self(node.left), self(node.right), ast.unparse(node))
        if isinstance(node, ast.Compare):
            left = self(node.left)
            result = None
            for op, right_node in zip(node.ops, node.comparators):
                part = self._compare(op, left, right_node)
                result = part if result is None else pc.and_kleene(result, part)
                left = self(right_node) if type(op) in _COMPARE else left
            return result
        if isinstance(node, ast.Name):
            if node.id not in self.table.column_names:
                raise self.error(f"unknown column {node.id!r} (columns here: {', '.join(sorted(self.table.column_names))})")
            return self.table.column(node.id)
        if isinstance(node, ast.Attribute):
            return self._threshold(node.attr)
        if isinstance(node, ast.Constant):
            return pa.scalar(node.value)
        raise self.error(f"cannot evaluate {ast.unparse(node)!r}")  # pragma: no cover - _check refuses it

    def _threshold(self, name: str) -> Value:
        """`t.<name>`: one scalar, or per row when `<name>@<lang>` overrides exist and the
        table has a `lang` label (rows of other languages, or without one, get the default)."""
        default = self.thresholds[name]
        prefix = f"{name}{LANG_SEPARATOR}"
        per_lang = {key[len(prefix):]: value for key, value in self.thresholds.items() if key.startswith(prefix)}
        if not per_lang or LANG_COLUMN not in self.table.column_names:
            return pa.scalar(default)
        all_ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (default, *per_lang.values()))
        value_type = pa.int64() if all_ints else pa.float64()
        lang = self.table.column(LANG_COLUMN)
        if not pa.types.is_string(lang.type) and not pa.types.is_large_string(lang.type):
            lang = pc.cast(lang, pa.string())
        position = pc.index_in(lang, value_set=pa.array(list(per_lang), pa.string()))
        override = pc.take(pa.array(list(per_lang.values()), value_type), position)
        return pc.coalesce(override, pa.scalar(default, value_type))

    def _bool(self, value: Value) -> Value:
        if not pa.types.is_boolean(value.type) and not pa.types.is_null(value.type):
            raise self.error(f"{value.type} value used as a condition; compare it, e.g. 'x > 0'")
        return value

    def _apply(self, fn: Callable, left: Value, right: Value, what: str) -> Value:
        try:
            return fn(left, right)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self.error(f"cannot evaluate {what!r}: {exc}") from None

    def _compare(self, op: ast.cmpop, left: Value, right_node: ast.expr) -> Value:
        if isinstance(op, (ast.Is, ast.IsNot)):
            return pc.is_null(left) if isinstance(op, ast.Is) else pc.is_valid(left)
        if isinstance(op, (ast.In, ast.NotIn)):
            values = [_literal(e, self.rule.name) for e in right_node.elts]
            try:
                found = pc.is_in(left, value_set=pa.array(values))
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise self.error(f"cannot evaluate 'in': {exc}") from None
            # SQL semantics: null in [...] is null, not false.
            found = pc.if_else(pc.is_null(left), pa.scalar(None, pa.bool_()), found)
            return pc.invert(found) if isinstance(op, ast.NotIn) else found
        return self._apply(_COMPARE[type(op)], left, self(right_node), f"{ast.unparse(right_node)}")


class RuleSet:
    """Ordered named rules; `holds(table)` gives the first failing rule name per row."""

    def __init__(self, rules: list[dict], thresholds: dict | None = None):
        self.thresholds = dict(thresholds or {})
        self.rules: list[Rule] = []
        seen: set[str] = set()
        for i, spec in enumerate(rules or []):
            if not isinstance(spec, dict) or set(spec) - {"name", "expr", "enabled", "stage"} or "expr" not in spec:
                raise RuleError(f"rule #{i + 1} must be a mapping with 'name' and 'expr' "
                                f"(optional: 'enabled', 'stage'), got {spec!r}")
            if spec.get("enabled", True) is False:
                continue
            rule = parse_rule(spec.get("name"), spec["expr"], self.thresholds)
            if rule.name in seen:
                raise RuleError(f"rule name {rule.name!r} is used twice; names must be unique (they are drop reasons)")
            seen.add(rule.name)
            self.rules.append(rule)

    @property
    def columns(self) -> frozenset[str]:
        return frozenset().union(*(r.columns for r in self.rules)) if self.rules else frozenset()

    def check_columns(self, available: set[str] | frozenset[str]) -> None:
        """Config-time check: every rule's columns exist among `available`."""
        for rule in self.rules:
            missing = sorted(rule.columns - set(available))
            if missing:
                raise RuleError(f"rule {rule.name!r}: unknown column {missing[0]!r} "
                                f"(the enabled stages produce: {', '.join(sorted(available))})")

    def failing_rule(self, table: pa.Table) -> pa.Array:
        """Per row: the name of the first rule that does not hold, or null when all hold."""
        n = table.num_rows
        reason = pa.nulls(n, pa.string())
        for rule in reversed(self.rules):
            result = _Evaluator(table, rule, self.thresholds)(rule.tree)
            if isinstance(result, pa.Scalar):
                result = pa.array([result.as_py()] * n, pa.bool_())
            if not pa.types.is_boolean(result.type) and not pa.types.is_null(result.type):
                raise RuleError(f"rule {rule.name!r} ({rule.expr}): gives {result.type}, not a condition")
            fails = pc.invert(pc.fill_null(result, False))
            reason = pc.if_else(fails, pa.scalar(rule.name), reason)
        if isinstance(reason, pa.ChunkedArray):
            reason = reason.combine_chunks()
        return reason


class RuleFilterStage(Stage):
    name = "filter"

    def __init__(self, rules: list[dict], thresholds: dict | None = None):
        self.rule_set = RuleSet(rules, thresholds)

    def process(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0 or not self.rule_set.rules:
            return table
        reason = self.rule_set.failing_rule(table)
        return mark_drops(table, pc.is_valid(reason), reason, self.name)
