"""Table specs: ``experiments/tables/<table>.yaml``, loaded and checked before any run starts.

A table spec is a paper table (or an ablation) as a runnable object: which configs make its rows,
which metrics make its columns, what the paper reports in each cell and where it says so, how close
counts as reproduced, and how to run it at two scales::

    table: cascade_depth                      # default: the file's stem
    title: "A cascade, Table 3"               # one line for the report
    description: ...                          # free text, copied into the report
    sources:                                  # where the paper numbers come from
      table3: {paper: "Author et al., Venue 2020", where: "Table 3", split: "Dataset val",
               protocol: "the metric as the paper computes it", status: confirmed}
    source: table3                            # default source of a cell
    tolerance: 1.0                            # default |ours - paper| that counts as reproduced
    epoch: last                               # last | best: which validation a run reports
    select: val/acc                           # with epoch: best, the metric that picks the epoch
    derive:                                   # row vars read from each row's composed config
      heads: model.init_args.network.init_args.num_heads   # (a row that also states one is checked)
    columns:
      final: {metric: "val/acc_head{heads}", label: Final, scale: 100, digits: 1}
      halfway: {metric: "val/acc_head{half}", scale: 100}   # {var}: a row's vars
    rows:
      h2:
        label: 2 heads
        section: Equal size                   # rows of one section form one block of the report
        vars: {half: 1}                       # fill the column templates; a row without a
                                              # template's var has no such cell
        override: {model.init_args.network.init_args.num_heads: 2}   # dotted keys
        paper: {final: 87.4, halfway: {value: 84.6, source: table3, tolerance: 1.5}}
        profiles: {paper: {base: other.yaml, override: {...}, data_dir: other}, quick: {skip: true}}
    profiles:
      quick:                                  # synthetic data, CPU minutes, checks the trend
        base: experiments/configs/<task>/<name>_synthetic_quick.yaml   # or a list
        override: {trainer.max_epochs: 6}     # applied to every row, before the row's own
        seeds: 2
        slots: 2                              # runs at once (CPU threads are split between them)
        compare: false                        # paper numbers shown, tolerance not judged
        trained: {column: final, min: 60}     # a row under it is under-trained: its claims not resolved
      paper:                                  # the real dataset, the paper's recipe
        base: experiments/configs/<task>/<name>_<dataset>.yaml
        data: {key: data.init_args.source.init_args.root, dir: <dataset>, help: "where to get it"}
        seeds: 1
    checks:                                   # orderings the paper reports, checked on our means
      - name: more heads, higher final accuracy
        order: [h2.final, h4.final, h8.final]                     # strictly increasing
      - name: intermediate below final
        all: ["h2.halfway < h2.final", "h4.halfway < h4.final"]   # < <= > >=
    plots:
      - {name: outputs, kind: per_output, rows: [h2, h4], metric: "val/acc_head{k}",
         count: heads, scale: 100, title: "..."}     # metric at output k = 1..count of each row
      - {name: size, kind: against_var, var: heads, columns: [final]}   # metric against a row var
      - {name: curves, kind: curves, columns: [final]}            # per-epoch curves per row
      - {name: bars, kind: bars, columns: [final, halfway]}        # mean +- std per row, paper marks

The dataclasses below are this format: their fields are the keys above, checked by
``core.specs.validate``; ``parse_table`` then checks what one entry says of another (a cell's
column, a check's rows). Every mistake a user can fix raises ``TableSpecError`` with one line that
names the entry (``rows.h2.paper.finall: unknown column ...``).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from core.io import PROJECT_ROOT
from core.specs import (
    NAME, ConfigKey, Count, Flag, Identifier, Integer, Items, Mapping, Name, Number, OneOrMore, OverrideKey, Schema, SpecError, check,
    computed, item_where, load_yaml, shorthand, spec_dataclass, validate,
)

__all__ = [
    "TableSpecError", "TableSpec", "Source", "Column", "PaperCell", "Row", "RowProfile", "Profile", "DataSpec",
    "Check", "Comparison", "CellRef", "Plot", "TrainedFloor", "load_table", "table_path", "available_tables", "TABLES_DIR",
    "REPO_ROOT", "template_fields", "resolve_config_path",
]

REPO_ROOT = PROJECT_ROOT  # one project root for the whole suite (core.io)
TABLES_DIR = REPO_ROOT / "experiments" / "tables"
OPERATORS = ("<=", ">=", "<", ">")
_REF = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\.([A-Za-z0-9_-]+)\s*$")  # <row>.<column>


class TableSpecError(SpecError):
    """A table spec the user has to fix; the message names the entry."""


def template_fields(template: str) -> set[str]:
    """The ``{name}`` fields of a format string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def resolve_config_path(path: str) -> Path:
    """A config path as written in a spec: absolute, relative to the working directory, or
    relative to the repository root (so a spec works from any directory)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def _files_exist(paths: list[str]) -> list[str]:
    missing = [p for p in paths if not resolve_config_path(p).is_file()]
    if missing:
        raise ValueError(f"config file {missing[0]} not found")
    return paths


def _template(metric: str) -> str:
    try:
        template_fields(metric)
    except ValueError as error:
        raise ValueError(f"bad template {metric!r}: {error}") from None
    return metric


def _scalar(value: Any) -> Any:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"expected a number or text, got {value!r}")
    return value


Bases = Annotated[OneOrMore[str], check(lambda v: bool(v) and all(v), "give a config file or a list of config files"),
                  AfterValidator(_files_exist)]
Overrides = Mapping[Annotated[OverrideKey, check(lambda k: k.split(".")[0] != "run",
                                                 "the run section belongs to the runner (name, group, job_type, wandb_id)")], Any]
Tolerance = Annotated[Number, check(lambda v: v >= 0, "must be >= 0, got {value}")]
Metric = Annotated[str, check(bool, "missing (a logged metric such as val/acc, may hold {{row var}} fields)"), AfterValidator(_template)]


# ------------------------------------------------------------------------------------ model
@spec_dataclass
class Source(Schema):
    """Where a paper number comes from (``sources.<name>``; a bare string is its ``paper``)."""

    paper: Annotated[str, check(bool, "missing (the paper, repository or page the numbers come from)")]
    where: str = ""
    split: str = ""
    protocol: str = ""
    status: str = ""
    note: str = ""
    name: str = computed("")

    def describe(self) -> str:
        parts = [self.paper, self.where, self.split, self.protocol]
        text = "; ".join(p for p in parts if p)
        return f"{text} ({self.status})" if self.status else text


@spec_dataclass
class Column(Schema):
    """A column (``columns.<name>``; a bare string is its ``metric``): a metric template, filled per row."""

    metric: Metric
    label: str = ""  # default: the name
    scale: Number = 1.0
    digits: Annotated[Integer, check(lambda v: 0 <= v <= 6, "expected an integer from 0 to 6, got {value!r}")] = 1
    note: str = ""
    name: str = computed("")

    def has_cell(self, row: "Row") -> bool:
        """Whether ``row`` has this column's cell: its vars (stated or derived) fill the template."""
        return template_fields(self.metric) <= set(row.vars) | set(row.derived)

    def metric_for(self, row: "Row") -> str | None:
        """The logged metric of this column for ``row``, or None when the row lacks a variable
        of the template (the cell does not exist). Derived vars must have been resolved
        (``experiments.reproduce.plan.compose_plan``)."""
        if not self.has_cell(row):
            return None
        unresolved = sorted(template_fields(self.metric) - set(row.vars))
        if unresolved:
            raise TableSpecError(f"rows.{row.name}: var {unresolved[0]!r} is derived from the row's config, which is not composed yet")
        return self.metric.format(**row.vars)


@spec_dataclass
class PaperCell(Schema):
    """A paper number (``rows.<row>.paper.<column>``; a bare number is its ``value``). ``source``:
    a source's name or an inline source in the file, the ``Source`` once loaded; ``tolerance``:
    the table's when the cell states none (``null``: not judged)."""

    value: Number
    source: Any = None
    tolerance: Tolerance | None = None
    note: str = ""


@spec_dataclass
class RowProfile(Schema):
    base: Bases | None = None
    override: Overrides = field(default_factory=dict)
    data_dir: str | None = None
    skip: Flag = False


@spec_dataclass
class Row(Schema):
    label: str = ""  # default: the name
    section: str = ""
    vars: Mapping[Identifier, Annotated[Any, AfterValidator(_scalar)]] = field(default_factory=dict)
    override: Overrides = field(default_factory=dict)
    paper: Mapping[str, Annotated[PaperCell, shorthand("value")]] = field(default_factory=dict)
    profiles: Mapping[str, RowProfile] = field(default_factory=dict)
    note: str = ""
    name: str = computed("")
    derived: tuple[str, ...] = computed(())  # the table's derived var names (resolved per profile at plan time)

    def in_profile(self, profile: str) -> bool:
        return not self.profiles.get(profile, RowProfile()).skip


@spec_dataclass
class DataSpec(Schema):
    """How ``--data-root DIR`` reaches a profile's configs: ``DIR/<dir>`` becomes the config value
    at ``key`` (a row may name another ``dir``)."""

    key: ConfigKey
    dir: str = ""
    help: str = ""


@spec_dataclass(frozen=True)
class TrainedFloor(Schema):
    """A row whose ``column`` cell has a mean under ``min`` (in the column's scaled units) is not
    trained enough to be judged: every comparison with one of its cells is not resolved."""

    column: str
    min: Number


@spec_dataclass
class Profile(Schema):
    base: Bases
    description: str = ""
    override: Overrides = field(default_factory=dict)
    seeds: Count = 1
    slots: Count = 1
    compare: Flag = True
    data: DataSpec | None = None
    note: str = ""
    trained: TrainedFloor | None = None
    name: str = computed("")


@dataclass(frozen=True)
class CellRef:
    row: str
    column: str

    def __str__(self) -> str:
        return f"{self.row}.{self.column}"


@dataclass
class Comparison:
    left: CellRef
    op: str
    right: CellRef

    def holds(self, a: float, b: float) -> bool:
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@spec_dataclass
class Check(Schema):
    """An ordering the paper reports: ``order`` (cells, increasing) or ``all`` (comparisons)."""

    name: Annotated[str, check(bool, "missing (what the check states, e.g. 'deeper is better')")]
    order: list[str] | None = None
    all: OneOrMore[str] | None = None
    paper: str = ""
    profiles: OneOrMore[str] | None = None
    comparisons: list[Comparison] = computed(factory=list)

    def applies(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles


@spec_dataclass
class Plot(Schema):
    """per_output: a metric template with {k} at k = 1..<count var> of each row (the outputs of a
    multi-output network); against_var: columns against a numeric row var; bars: mean +- std per
    row; curves: a column per epoch."""

    name: Name
    kind: Literal["per_output", "against_var", "curves", "bars"]
    title: str = ""
    rows: Annotated[list[str], check(bool, "give a list of rows")] | None = None
    columns: OneOrMore[str] | None = None
    metric: str = ""
    count: str = ""
    var: str = ""
    scale: Number = 1.0
    ylabel: str = ""
    xlabel: str = ""


@spec_dataclass
class TableSpec(Schema):
    columns: Annotated[Mapping[Name, Annotated[Column, shorthand("metric")]], check(bool, "a table needs at least one column")]
    rows: Annotated[Mapping[Name, Row], check(bool, "a table needs at least one row")]
    profiles: Annotated[Mapping[Name, Profile], check(bool, "a table needs at least one profile (quick, paper)")]
    table: Name = ""  # default: the file's stem
    title: str = ""  # default: the table
    description: str = ""
    sources: Mapping[Name, Annotated[Source, shorthand("paper")]] = field(default_factory=dict)
    source: str | None = None
    checks: Items[Check] = field(default_factory=list)
    plots: Items[Plot] = field(default_factory=list)
    epoch: Literal["last", "best"] = "last"
    select: str | None = None
    select_mode: Literal["max", "min"] = "max"
    tolerance: Tolerance | None = None
    derive: Mapping[Identifier, ConfigKey] = field(default_factory=dict)
    path: Path = computed(None)
    raw: dict[str, Any] = computed(factory=dict)

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise TableSpecError(f"profile {name!r}: not in table {self.table} (profiles: {', '.join(self.profiles)})")
        return self.profiles[name]

    def rows_in(self, profile: str) -> list[Row]:
        return [row for row in self.rows.values() if row.in_profile(profile)]


# ---------------------------------------------------------------------------------- loading
def load_table(name_or_path: str | Path, tables_dir: Path | None = None) -> TableSpec:
    """Read and check a table spec: a name in ``experiments/tables`` or a path."""
    path = table_path(name_or_path, tables_dir)
    return parse_table(load_yaml(path, TableSpecError), path)


def available_tables(tables_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (tables_dir or TABLES_DIR).glob("*.yaml"))


def table_path(name_or_path: str | Path, tables_dir: Path | None = None) -> Path:
    text = str(name_or_path)
    candidate = Path(text)
    if candidate.suffix in (".yaml", ".yml") or "/" in text:
        if candidate.is_file():
            return candidate
        raise TableSpecError(f"table spec {text} not found")
    directory = tables_dir or TABLES_DIR
    path = directory / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(available_tables(directory)) or "none"
        raise TableSpecError(f"table {text!r}: no {path} (tables: {known})")
    return path


def parse_table(raw: Any, path: Path) -> TableSpec:
    """The table spec of the YAML mapping ``raw`` read from ``path``: typed, then its cross references checked."""
    if not isinstance(raw, dict):
        raise TableSpecError(f"{path}: a table spec is a mapping (table, columns, rows, profiles, ...)")
    spec = validate(TableSpec, raw, TableSpecError)
    spec.path, spec.raw = path, raw
    if not spec.table and not NAME.match(path.stem):
        raise TableSpecError(f"table: {path.stem!r} (the file's stem) is not a valid name; give one")
    spec.table = spec.table or path.stem
    spec.title = spec.title or spec.table
    for name, entry in [*spec.sources.items(), *spec.columns.items(), *spec.rows.items(), *spec.profiles.items()]:
        entry.name = name
    for entry in [*spec.columns.values(), *spec.rows.values()]:
        entry.label = entry.label or entry.name
    for row in spec.rows.values():
        row.derived = tuple(spec.derive)
    _check_entries(spec)
    for row in spec.rows.values():
        _check_row(spec, row)
    for i, item in enumerate(spec.checks):
        _check_check(spec, item_where("checks", i, item.name), item)
    seen: set[str] = set()
    for i, plot in enumerate(spec.plots):
        if plot.name in seen:
            raise TableSpecError(f"plots.{plot.name}: duplicate plot name")
        seen.add(plot.name)
        _check_plot(spec, item_where("plots", i, plot.name), plot)
    return spec


def _fail(where: str, message: str) -> None:
    raise TableSpecError(f"{where}: {message}")


def _check_entries(spec: TableSpec) -> None:
    """The default source, the columns' row vars, the profiles' trained floors."""
    if spec.source is not None and spec.source not in spec.sources:
        _fail("source", f"{spec.source!r} is not one of the sources ({', '.join(spec.sources) or 'none defined'})")
    all_vars = {var for row in spec.rows.values() for var in row.vars} | set(spec.derive)
    for column in spec.columns.values():
        unknown = template_fields(column.metric) - all_vars
        if unknown:
            _fail(f"columns.{column.name}.metric", f"{{{sorted(unknown)[0]}}} is not a var of any row")
    for profile in spec.profiles.values():
        if profile.trained is not None and profile.trained.column not in spec.columns:
            _fail(f"profiles.{profile.name}.trained.column", f"{profile.trained.column!r} is not a column ({', '.join(spec.columns)})")
        if not any(row.in_profile(profile.name) for row in spec.rows.values()):
            _fail(f"profiles.{profile.name}", "every row skips this profile")


def _check_row(spec: TableSpec, row: Row) -> None:
    """A row's profiles and paper cells; each cell gets its source and tolerance."""
    where = f"rows.{row.name}"
    for name, profile in row.profiles.items():
        if name not in spec.profiles:
            _fail(f"{where}.profiles.{name}", f"{name!r} is not a profile ({', '.join(spec.profiles)})")
        if profile.data_dir is not None and spec.profiles[name].data is None:
            _fail(f"{where}.profiles.{name}.data_dir", f"profile {name} has no data section (data.key) to apply it to")
    default = spec.sources.get(spec.source or "") or (next(iter(spec.sources.values())) if len(spec.sources) == 1 else None)
    for column, cell in row.paper.items():
        cwhere = f"{where}.paper.{column}"
        if column not in spec.columns:
            _fail(cwhere, f"unknown column (columns: {', '.join(spec.columns)})")
        if not spec.columns[column].has_cell(row):
            missing = sorted(template_fields(spec.columns[column].metric) - set(row.vars))
            _fail(cwhere, f"the row has no {column} cell: its vars lack {', '.join(missing)} for {spec.columns[column].metric!r}")
        if isinstance(cell.source, dict):
            cell.source = validate(Source, cell.source, TableSpecError, where=f"{cwhere}.source")
            cell.source.name = f"{cwhere}.source"
        elif cell.source is None:
            cell.source = default
        elif cell.source in spec.sources:
            cell.source = spec.sources[cell.source]
        else:
            _fail(f"{cwhere}.source", f"{cell.source!r} is not one of the sources ({', '.join(spec.sources) or 'none defined'})")
        if cell.source is None:
            _fail(f"{cwhere}.source", "every paper number needs a source (set it here or a table-level `source:`)")
        stated = spec.raw["rows"][row.name]["paper"][column]
        if not (isinstance(stated, dict) and "tolerance" in stated):
            cell.tolerance = spec.tolerance


def _check_check(spec: TableSpec, where: str, item: Check) -> None:
    """A check's cells exist (in its profiles); its comparisons are built."""
    if (item.order is None) == (item.all is None):
        _fail(where, "give either order: [cells, increasing] or all: ['a < b', ...]")
    if item.order is not None:
        if len(item.order) < 2:
            _fail(f"{where}.order", "give two or more cells <row>.<column>, in increasing order")
        refs = [_ref(spec, f"{where}.order[{j}]", text) for j, text in enumerate(item.order)]
        item.comparisons = [Comparison(a, "<", b) for a, b in zip(refs, refs[1:])]
    else:
        if not item.all:
            _fail(f"{where}.all", "give a list of comparisons such as 'hg2.halfway < hg2.final'")
        item.comparisons = [_comparison(spec, f"{where}.all[{j}]", text) for j, text in enumerate(item.all)]
    for profile in item.profiles or []:
        if profile not in spec.profiles:
            _fail(f"{where}.profiles", f"{profile!r} is not a profile ({', '.join(spec.profiles)})")
    for ref in [r for comparison in item.comparisons for r in (comparison.left, comparison.right)]:
        skipped = [p for p in item.profiles or [] if not spec.rows[ref.row].in_profile(p)]
        if skipped:
            _fail(where, f"row {ref.row} skips profile {skipped[0]}")


def _ref(spec: TableSpec, where: str, text: str) -> CellRef:
    match = _REF.match(text)
    if not match:
        _fail(where, f"{text!r} is not a cell reference <row>.<column>")
    row, column = match.groups()
    if row not in spec.rows:
        _fail(where, f"{row!r} is not a row (rows: {', '.join(spec.rows)})")
    if column not in spec.columns:
        _fail(where, f"{column!r} is not a column (columns: {', '.join(spec.columns)})")
    if not spec.columns[column].has_cell(spec.rows[row]):
        _fail(where, f"row {row} has no {column} cell (it lacks a variable of {spec.columns[column].metric!r})")
    return CellRef(row, column)


def _comparison(spec: TableSpec, where: str, text: str) -> Comparison:
    for op in OPERATORS:
        if op in text:
            left, right = text.split(op, 1)
            return Comparison(_ref(spec, where, left), op, _ref(spec, where, right))
    _fail(where, f"{text!r} has no comparison operator ({', '.join(OPERATORS)})")


def _check_plot(spec: TableSpec, where: str, plot: Plot) -> None:
    """A plot's rows and columns exist, and its kind's row vars with them."""
    for r in plot.rows or []:
        if r not in spec.rows:
            _fail(f"{where}.rows", f"{r!r} is not a row (rows: {', '.join(spec.rows)})")
    for c in plot.columns or []:
        if c not in spec.columns:
            _fail(f"{where}.columns", f"{c!r} is not a column (columns: {', '.join(spec.columns)})")
    plotted = [spec.rows[r] for r in plot.rows or spec.rows]
    if plot.kind == "per_output":
        if "k" not in template_fields(plot.metric):
            _fail(f"{where}.metric", "a per_output plot needs a metric template with {k} (the output), e.g. val/acc_head{k}")
        if not plot.count:
            _fail(f"{where}.count", "the row var that holds each row's number of outputs")
        for row in plotted:
            count = row.vars.get(plot.count)
            if plot.count not in spec.derive and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
                _fail(where, f"row {row.name} needs an integer var {plot.count!r} (its number of outputs)")
            missing = template_fields(plot.metric) - {"k"} - set(row.vars) - set(spec.derive)
            if missing:
                _fail(f"{where}.metric", f"row {row.name} lacks the var {sorted(missing)[0]!r}")
    elif plot.kind == "against_var":
        if not plot.var:
            _fail(f"{where}.var", "the numeric row var on the x axis")
        for row in plotted:
            if plot.var not in spec.derive and not isinstance(row.vars.get(plot.var), (int, float)):
                _fail(where, f"row {row.name} needs a numeric var {plot.var!r}")
