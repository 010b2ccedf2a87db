"""Table specs: ``experiments/tables/<table>.yaml`` (docs/tables.md, "Writing a table"), checked before any run starts.

A paper table (or an ablation) as a runnable object. The format is ``TableSpec`` and the dataclasses it
holds: their fields are the keys, their comments what each means. ``core.specs.validate`` checks types
and names, ``parse_table`` what one entry says of another; each mistake raises ``TableSpecError``, one line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import PlainValidator, ValidationInfo

from core.io import PROJECT_ROOT
from core.specs import (
    ConfigKey, Count, Flag, Identifier, Integer, Items, Keyed, Mapping, Name, Number, OneOrMore, OverrideKey, Schema, SpecError,
    Template, check, computed, config_files, item_where, load_yaml, named, ref, shorthand, spec_dataclass, template_fields, validate,
)

__all__ = [
    "TableSpecError", "TableSpec", "Source", "Column", "PaperCell", "Row", "RowProfile", "Profile", "DataSpec", "Check", "Comparison",
    "CellRef", "Plot", "TrainedFloor", "load_table", "available_tables", "TABLES_DIR", "resolve_config_path",
]

TABLES_DIR = PROJECT_ROOT / "experiments" / "tables"
OPERATORS = ("<=", ">=", "<", ">")
_REF = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\.([A-Za-z0-9_-]+)\s*$")  # <row>.<column>


class TableSpecError(SpecError):
    """A table spec the user has to fix; the message names the entry."""


def resolve_config_path(path: str) -> Path:
    """A config path as written in a spec: absolute, relative to the working directory, or
    relative to the repository root (so a spec works from any directory)."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else PROJECT_ROOT / p


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
class Column(Schema):  # a bare string: its metric, whose {var} fields are row vars (a row that lacks one has no such cell)
    metric: Annotated[Template, check(bool, "missing (a logged metric such as val/acc, may hold {{row var}} fields)")]
    label: str = ""  # default: the name
    scale: Number = 1.0
    digits: Annotated[Integer, check(lambda v: 0 <= v <= 6, "expected an integer from 0 to 6, got {value!r}")] = 1
    note: str = ""
    name: str = computed("")

    def lacks(self, row: "Row") -> list[str]:
        """The template's vars that ``row`` neither states nor derives (none: the row has this column's cell)."""
        return sorted(template_fields(self.metric) - set(row.vars) - set(row.derived))

    def metric_for(self, row: "Row") -> str | None:
        """The logged metric of this column for ``row``, or None when the row lacks a variable
        of the template (the cell does not exist). Derived vars must have been resolved
        (``experiments.reproduce.plan.compose_plan``)."""
        if self.lacks(row):
            return None
        unresolved = sorted(template_fields(self.metric) - set(row.vars))
        if unresolved:
            raise TableSpecError(f"rows.{row.name}: var {unresolved[0]!r} is derived from the row's config, which is not composed yet")
        return self.metric.format(**row.vars)


@spec_dataclass
class PaperCell(Schema):  # a bare number: its value
    value: Number
    source: Annotated[Any, check(lambda v: isinstance(v, (str, dict)), "give a source's name or a mapping {{paper, where, ...}}"),
                      ref("sources", "{value!r} is not one of the sources ({known})")] = None  # or inline; the Source once loaded
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
class CellRef:  # <row>.<column> in the file
    row: str
    column: str

    def __str__(self) -> str:
        return f"{self.row}.{self.column}"


@dataclass(frozen=True)
class Comparison:  # '<cell> <op> <cell>' in the file, op one of OPERATORS
    left: CellRef
    op: str
    right: CellRef

    def holds(self, a: float, b: float) -> bool:
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[self.op]

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


def _cell(text: Any, info: ValidationInfo) -> CellRef:
    match = _REF.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a cell reference <row>.<column>")
    for section, name in zip(("rows", "columns"), match.groups()):
        named(name, info, section, f"{{value!r}} is not a {section[:-1]} ({section}: {{known}})")
    return CellRef(*match.groups())


def _comparison(text: Any, info: ValidationInfo) -> Comparison:
    op = next((op for op in OPERATORS if op in str(text)), None)
    if op is None:
        raise ValueError(f"{text!r} has no comparison operator ({', '.join(OPERATORS)})")
    left, right = str(text).split(op, 1)
    return Comparison(_cell(left, info), op, _cell(right, info))


@spec_dataclass
class Check(Schema):  # an ordering the paper reports, checked on our means (in every profile or in profiles)
    name: Annotated[str, check(bool, "missing (what the check states, e.g. 'deeper is better')")]
    order: Annotated[list[Annotated[CellRef, PlainValidator(_cell)]],
                     check(lambda v: len(v) >= 2, "give two or more cells <row>.<column>, in increasing order")] | None = None
    all: Annotated[OneOrMore[Annotated[Comparison, PlainValidator(_comparison)]],
                   check(bool, "give a list of comparisons such as 'hg2.halfway < hg2.final'")] | None = None
    paper: str = ""
    profiles: OneOrMore[ProfileRef] | None = None

    @property
    def comparisons(self) -> list[Comparison]:
        """``order`` as each cell below the next, or ``all``."""
        return [Comparison(a, "<", b) for a, b in zip(self.order, self.order[1:])] if self.order else self.all or []

    def applies(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles


@spec_dataclass
class Plot(Schema):
    name: Name
    kind: Literal["per_output", "against_var", "curves", "bars"]  # docs/tables.md ("Writing a table") says what each draws
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
    """Read and check a table spec: a name in ``tables_dir`` (default ``experiments/tables``) or a path."""
    text = str(name_or_path)
    path = Path(text) if Path(text).suffix in (".yaml", ".yml") or "/" in text else (tables_dir or TABLES_DIR) / f"{text}.yaml"
    if not path.is_file():
        raise TableSpecError(f"table spec {text} not found" if path == Path(text) else
                             f"table {text!r}: no {path} (tables: {', '.join(available_tables(tables_dir)) or 'none'})")
    return parse_table(load_yaml(path, TableSpecError), path)


def available_tables(tables_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (tables_dir or TABLES_DIR).glob("*.yaml"))


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
        if unknown := sorted(template_fields(column.metric) - all_vars):
            _fail(f"columns.{column.name}.metric", f"{{{unknown[0]}}} is not a var of any row")
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
    """A row's profiles and paper cells; each cell gets its Source and tolerance."""
    for name, profile in row.profiles.items():
        if profile.data_dir is not None and spec.profiles[name].data is None:
            _fail(f"rows.{row.name}.profiles.{name}.data_dir", f"profile {name} has no data section (data.key) to apply it to")
    default = spec.source or (next(iter(spec.sources)) if len(spec.sources) == 1 else None)
    for column, cell in row.paper.items():
        where = f"rows.{row.name}.paper.{column}"
        if missing := spec.columns[column].lacks(row):
            _fail(where, f"the row has no {column} cell: its vars lack {', '.join(missing)} for {spec.columns[column].metric!r}")
        if isinstance(cell.source, dict):
            cell.source = validate(Source, cell.source, TableSpecError, where=f"{where}.source", context=spec.raw)
            cell.source.name = f"{where}.source"
        elif (cell.source or default) is None:
            _fail(f"{where}.source", "every paper number needs a source (set it here or a table-level `source:`)")
        else:
            cell.source = spec.sources[cell.source or default]
        stated = spec.raw["rows"][row.name]["paper"][column]
        if not (isinstance(stated, dict) and "tolerance" in stated):  # a stated null: not judged
            cell.tolerance = spec.tolerance


def _check_check(spec: TableSpec, where: str, item: Check) -> None:
    """A check states its cells one way, and they exist in every profile it applies to."""
    if (item.order is None) == (item.all is None):
        _fail(where, "give either order: [cells, increasing] or all: ['a < b', ...]")
    cells = [(f"order[{j}]", cell) for j, cell in enumerate(item.order or [])]
    cells += [(f"all[{j}]", cell) for j, cmp in enumerate(item.all or []) for cell in (cmp.left, cmp.right)]
    for key, cell in cells:
        if missing := spec.columns[cell.column].lacks(spec.rows[cell.row]):
            _fail(f"{where}.{key}", f"row {cell.row} has no {cell.column} cell (its vars lack {', '.join(missing)})")
        if skipped := [p for p in item.profiles or [] if not spec.rows[cell.row].in_profile(p)]:
            _fail(where, f"row {cell.row} skips profile {skipped[0]}")


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
            if missing := sorted(template_fields(plot.metric) - {"k"} - set(row.vars) - set(spec.derive)):
                _fail(f"{where}.metric", f"row {row.name} lacks the var {missing[0]!r}")
    elif plot.kind == "against_var":
        if not plot.var:
            _fail(f"{where}.var", "the numeric row var on the x axis")
        for row in plotted:
            if plot.var not in spec.derive and not isinstance(row.vars.get(plot.var), (int, float)):
                _fail(where, f"row {row.name} needs a numeric var {plot.var!r}")
