"""Table specs: ``experiments/tables/<table>.yaml``, loaded and checked before any run starts.

A table spec is a paper table (or an ablation) as a runnable object: which configs make its rows,
which metrics make its columns, what the paper reports in each cell and where it says so, how close
counts as reproduced, and how to run it at two scales. Its format is ``TableSpec`` and the
dataclasses it holds: their fields are the keys, their comments what each means. In short::

    sources: {table3: {paper: "Author et al., Venue 2020", where: "Table 3", split: "Dataset val"}}
    derive: {heads: model.init_args.network.init_args.num_heads}   # a row var read from its config
    columns: {final: {metric: "val/acc_head{heads}", label: Final, scale: 100}}
    rows:
      h2: {section: Equal size, override: {model.init_args.network.init_args.num_heads: 2}, paper: {final: 87.4}}
      h4: {section: Equal size, override: {model.init_args.network.init_args.num_heads: 4},
           paper: {final: {value: 88.1, source: table3, tolerance: 1.5}}, profiles: {quick: {skip: true}}}
    profiles:
      quick: {base: experiments/configs/<task>/<name>_synthetic_quick.yaml, seeds: 2, compare: false}
      paper: {base: experiments/configs/<task>/<name>_<dataset>.yaml,
              data: {key: data.init_args.source.init_args.root, dir: <dataset>, help: "where to get it"}}
    checks: [{name: more heads higher, order: [h2.final, h4.final]}, {name: x, all: ["h2.final <= h4.final"]}]
    plots: [{name: size, kind: against_var, var: heads, columns: [final]}]

``core.specs.validate`` checks the types and ``parse_table`` what one entry says of another. Every
mistake a user can fix raises ``TableSpecError`` with one line that names the entry
(``rows.h2.paper.finall: unknown column ...``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from core.io import PROJECT_ROOT
from core.specs import (
    ConfigKey, Count, Flag, Identifier, Integer, Items, Keyed, Mapping, Name, Number, OneOrMore, OverrideKey, Schema, SpecError,
    Template, check, computed, config_files, item_where, load_yaml, ref, shorthand, spec_dataclass, template_fields, validate,
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


def resolve_config_path(path: str) -> Path:
    """A config path as written in a spec: absolute, relative to the working directory, or
    relative to the repository root (so a spec works from any directory)."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


Bases = config_files(resolve_config_path)
Overrides = Mapping[Annotated[OverrideKey, check(lambda k: k.split(".")[0] != "run",
                                                 "the run section belongs to the runner (name, group, job_type, wandb_id)")], Any]
Tolerance = Annotated[Number, check(lambda v: v >= 0, "must be >= 0, got {value}")]
Scalar = Annotated[Any, check(lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
                              "expected a number or text, got {value!r}")]
ColumnRef = Annotated[str, ref("columns", "{value!r} is not a column (columns: {known})")]
ProfileRef = Annotated[str, ref("profiles", "{value!r} is not a profile ({known})")]
RowRef = Annotated[str, ref("rows", "{value!r} is not a row (rows: {known})")]


@spec_dataclass
class Source(Schema):  # where a paper number comes from (a bare string: its paper)
    paper: Annotated[str, check(bool, "missing (the paper, repository or page the numbers come from)")]
    where: str = ""
    split: str = ""
    protocol: str = ""
    status: str = ""
    note: str = ""
    name: str = computed("")

    def describe(self) -> str:
        text = "; ".join(p for p in (self.paper, self.where, self.split, self.protocol) if p)
        return f"{text} ({self.status})" if self.status else text


@spec_dataclass
class Column(Schema):  # a bare string: its metric
    metric: Annotated[Template, check(bool, "missing (a logged metric such as val/acc, may hold {{row var}} fields)")]  # {var}: a
    # row's var; a row without one of them has no such cell
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
class PaperCell(Schema):  # a bare number: its value
    value: Number
    source: Any = None  # a source's name or an inline source in the file, the Source once loaded
    tolerance: Tolerance | None = None  # the table's unless the cell states one (null: not judged)
    note: str = ""


@spec_dataclass
class RowProfile(Schema):  # what a row changes in one profile
    base: Bases | None = None
    override: Overrides = field(default_factory=dict)
    data_dir: str | None = None
    skip: Flag = False


@spec_dataclass
class Row(Schema):
    label: str = ""  # default: the name
    section: str = ""  # rows of one section form one block of the report
    vars: Mapping[Identifier, Scalar] = field(default_factory=dict)  # fill the column templates
    override: Overrides = field(default_factory=dict)
    paper: Mapping[Annotated[str, ref("columns", "unknown column (columns: {known})")], Annotated[PaperCell, shorthand("value")]] = \
        field(default_factory=dict)
    profiles: Mapping[ProfileRef, RowProfile] = field(default_factory=dict)
    note: str = ""
    name: str = computed("")
    derived: tuple[str, ...] = computed(())  # the table's derived var names (resolved per profile at plan time)

    def in_profile(self, profile: str) -> bool:
        return not self.profiles.get(profile, RowProfile()).skip


@spec_dataclass
class DataSpec(Schema):  # --data-root DIR: DIR/<dir> becomes the config value at key (a row's data_dir: another dir)
    key: ConfigKey
    dir: str = ""
    help: str = ""


@spec_dataclass(frozen=True)
class TrainedFloor(Schema):  # a row whose column's mean is under min (scaled units) is under-trained: its claims not resolved
    column: ColumnRef
    min: Number


@spec_dataclass
class Profile(Schema):
    base: Bases  # every row starts from these config files
    description: str = ""
    override: Overrides = field(default_factory=dict)  # applied to every row, before the row's own
    seeds: Count = 1
    slots: Count = 1  # runs at once (CPU threads are split between them)
    compare: Flag = True  # false: paper numbers shown, tolerance not judged
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
class Check(Schema):  # an ordering the paper reports, checked on our means (in every profile or in profiles)
    name: Annotated[str, check(bool, "missing (what the check states, e.g. 'deeper is better')")]
    order: Annotated[list[str], check(lambda v: len(v) >= 2, "give two or more cells <row>.<column>, in increasing order")] | None = None
    all: Annotated[OneOrMore[str], check(bool, "give a list of comparisons such as 'hg2.halfway < hg2.final'")] | None = None  # < <= > >=
    paper: str = ""
    profiles: OneOrMore[ProfileRef] | None = None
    comparisons: list[Comparison] = computed(factory=list)

    def applies(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles


@spec_dataclass
class Plot(Schema):
    """per_output: ``metric`` with {k} at k = 1..<the row var ``count``> (the outputs of a multi-output
    network) per row; against_var: ``columns`` against the numeric row var ``var``; bars: mean +- std
    per row, paper marks; curves: a column per epoch."""

    name: Name
    kind: Literal["per_output", "against_var", "curves", "bars"]
    title: str = ""
    rows: Annotated[list[RowRef], check(bool, "give a list of rows")] | None = None
    columns: OneOrMore[ColumnRef] | None = None
    metric: str = ""
    count: str = ""
    var: str = ""
    scale: Number = 1.0
    ylabel: str = ""
    xlabel: str = ""


@spec_dataclass
class TableSpec(Schema):
    columns: Annotated[Keyed[Name, Annotated[Column, shorthand("metric")]], check(bool, "a table needs at least one column")]
    rows: Annotated[Keyed[Name, Row], check(bool, "a table needs at least one row")]
    profiles: Annotated[Keyed[Name, Profile], check(bool, "a table needs at least one profile (quick, paper)")]
    table: Name = ""  # default: the file's stem
    title: str = ""  # one line for the report; default: the table
    description: str = ""  # free text, copied into the report
    sources: Keyed[Name, Annotated[Source, shorthand("paper")]] = field(default_factory=dict)
    source: Annotated[str, ref("sources", "{value!r} is not one of the sources ({known})")] | None = None  # a cell's default
    tolerance: Tolerance | None = None  # default |ours - paper| that counts as reproduced
    epoch: Literal["last", "best"] = "last"  # which validation a run reports
    select: str | None = None  # with epoch: best, the metric that picks the epoch
    select_mode: Literal["max", "min"] = "max"
    derive: Mapping[Identifier, ConfigKey] = field(default_factory=dict)  # row vars read from each row's composed config
    checks: Items[Check] = field(default_factory=list)
    plots: Items[Plot] = field(default_factory=list)
    path: Path = computed(None)
    raw: dict[str, Any] = computed(factory=dict)

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise TableSpecError(f"profile {name!r}: not in table {self.table} (profiles: {', '.join(self.profiles)})")
        return self.profiles[name]

    def rows_in(self, profile: str) -> list[Row]:
        return [row for row in self.rows.values() if row.in_profile(profile)]


def load_table(name_or_path: str | Path, tables_dir: Path | None = None) -> TableSpec:
    """Read and check a table spec: a name in ``experiments/tables`` or a path."""
    path = table_path(name_or_path, tables_dir)
    return parse_table(load_yaml(path, TableSpecError), path)


def available_tables(tables_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (tables_dir or TABLES_DIR).glob("*.yaml"))


def table_path(name_or_path: str | Path, tables_dir: Path | None = None) -> Path:
    text = str(name_or_path)
    if Path(text).suffix in (".yaml", ".yml") or "/" in text:
        if Path(text).is_file():
            return Path(text)
        raise TableSpecError(f"table spec {text} not found")
    path = (tables_dir or TABLES_DIR) / f"{text}.yaml"
    if not path.is_file():
        raise TableSpecError(f"table {text!r}: no {path} (tables: {', '.join(available_tables(tables_dir)) or 'none'})")
    return path


def parse_table(raw: Any, path: Path) -> TableSpec:
    """The table spec of the YAML mapping ``raw`` read from ``path``: typed, then its cross references checked."""
    if not isinstance(raw, dict):
        raise TableSpecError(f"{path}: a table spec is a mapping (table, columns, rows, profiles, ...)")
    spec = validate(TableSpec, {"table": path.stem, **raw}, TableSpecError)
    spec.path, spec.raw, spec.title = path, raw, spec.title or spec.table
    for entry in [*spec.columns.values(), *spec.rows.values()]:
        entry.label = entry.label or entry.name
    all_vars = {var for row in spec.rows.values() for var in row.vars} | set(spec.derive)
    for column in spec.columns.values():
        if template_fields(column.metric) - all_vars:
            _fail(f"columns.{column.name}.metric", f"{{{sorted(template_fields(column.metric) - all_vars)[0]}}} is not a var of any row")
    for row in spec.rows.values():
        row.derived = tuple(spec.derive)
        _check_row(spec, row)
    for profile in spec.profiles.values():
        if not spec.rows_in(profile.name):
            _fail(f"profiles.{profile.name}", "every row skips this profile")
    for i, item in enumerate(spec.checks):
        _check_check(spec, item_where("checks", i, item.name), item)
    for i, plot in enumerate(spec.plots):
        if plot.name in [p.name for p in spec.plots[:i]]:
            _fail(f"plots.{plot.name}", "duplicate plot name")
        _check_plot(spec, item_where("plots", i, plot.name), plot)
    return spec


def _fail(where: str, message: str) -> None:
    raise TableSpecError(f"{where}: {message}")


def _check_row(spec: TableSpec, row: Row) -> None:
    """A row's profiles and paper cells; each cell gets its source and tolerance."""
    for name, profile in row.profiles.items():
        if profile.data_dir is not None and spec.profiles[name].data is None:
            _fail(f"rows.{row.name}.profiles.{name}.data_dir", f"profile {name} has no data section (data.key) to apply it to")
    default = spec.sources.get(spec.source or "") or (next(iter(spec.sources.values())) if len(spec.sources) == 1 else None)
    for column, cell in row.paper.items():
        where = f"rows.{row.name}.paper.{column}"
        if not spec.columns[column].has_cell(row):
            missing = sorted(template_fields(spec.columns[column].metric) - set(row.vars))
            _fail(where, f"the row has no {column} cell: its vars lack {', '.join(missing)} for {spec.columns[column].metric!r}")
        if isinstance(cell.source, dict):
            cell.source = validate(Source, cell.source, TableSpecError, where=f"{where}.source", context=spec.raw)
            cell.source.name = f"{where}.source"
        elif cell.source is not None and cell.source not in spec.sources:
            _fail(f"{where}.source", f"{cell.source!r} is not one of the sources ({', '.join(spec.sources) or 'none defined'})")
        cell.source = spec.sources[cell.source] if isinstance(cell.source, str) else cell.source or default
        if cell.source is None:
            _fail(f"{where}.source", "every paper number needs a source (set it here or a table-level `source:`)")
        stated = spec.raw["rows"][row.name]["paper"][column]
        if not (isinstance(stated, dict) and "tolerance" in stated):
            cell.tolerance = spec.tolerance


def _check_check(spec: TableSpec, where: str, item: Check) -> None:
    """A check's cells exist (in its profiles); its comparisons are built."""
    if (item.order is None) == (item.all is None):
        _fail(where, "give either order: [cells, increasing] or all: ['a < b', ...]")
    if item.order is not None:
        refs = [_ref(spec, f"{where}.order[{j}]", text) for j, text in enumerate(item.order)]
        item.comparisons = [Comparison(a, "<", b) for a, b in zip(refs, refs[1:])]
    for j, text in enumerate(item.all or []):
        op = next((op for op in OPERATORS if op in text), None)
        if op is None:
            _fail(f"{where}.all[{j}]", f"{text!r} has no comparison operator ({', '.join(OPERATORS)})")
        left, right = text.split(op, 1)
        item.comparisons.append(Comparison(_ref(spec, f"{where}.all[{j}]", left), op, _ref(spec, f"{where}.all[{j}]", right)))
    skipped = [(ref.row, p) for cmp in item.comparisons for ref in (cmp.left, cmp.right)
               for p in item.profiles or [] if not spec.rows[ref.row].in_profile(p)]
    if skipped:
        _fail(where, f"row {skipped[0][0]} skips profile {skipped[0][1]}")


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


def _check_plot(spec: TableSpec, where: str, plot: Plot) -> None:
    """The row vars a plot's kind needs."""
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
