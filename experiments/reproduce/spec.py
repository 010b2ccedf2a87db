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

Every mistake a user can fix raises ``TableSpecError`` with one line that names the entry
(``rows.h2.paper.finall: unknown column ...``).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.io import PROJECT_ROOT

__all__ = [
    "TableSpecError", "TableSpec", "Source", "Column", "PaperCell", "Row", "RowProfile", "Profile", "DataSpec",
    "Check", "Comparison", "CellRef", "Plot", "TrainedFloor", "load_table", "table_path", "available_tables", "TABLES_DIR",
    "REPO_ROOT", "template_fields", "resolve_config_path",
]

REPO_ROOT = PROJECT_ROOT  # one project root for the whole suite (core.io)
TABLES_DIR = REPO_ROOT / "experiments" / "tables"

TOP_LEVEL = {
    "table", "title", "description", "sources", "source", "tolerance", "epoch", "select", "select_mode",
    "columns", "rows", "profiles", "checks", "plots", "derive",
}
SOURCE_FIELDS = ("paper", "where", "split", "protocol", "status", "note")
COLUMN_FIELDS = {"metric", "label", "scale", "digits", "note"}
CELL_FIELDS = {"value", "source", "tolerance", "note"}
ROW_FIELDS = {"label", "section", "vars", "override", "paper", "profiles", "note"}
ROW_PROFILE_FIELDS = {"base", "override", "data_dir", "skip"}
PROFILE_FIELDS = {"description", "base", "override", "seeds", "slots", "compare", "data", "note", "trained"}
TRAINED_FIELDS = {"column", "min"}
DATA_FIELDS = {"key", "dir", "help"}
CHECK_FIELDS = {"name", "order", "all", "paper", "profiles"}
PLOT_FIELDS = {"name", "kind", "title", "rows", "columns", "metric", "count", "var", "scale", "ylabel", "xlabel"}
# per_output: a metric template with {k} at k = 1..<count var> of each row (the outputs of a
# multi-output network); against_var: columns against a numeric row var; bars: mean +- std per
# row; curves: a column per epoch.
PLOT_KINDS = ("per_output", "against_var", "curves", "bars")
OPERATORS = ("<=", ">=", "<", ">")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_REF = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\.([A-Za-z0-9_-]+)\s*$")


class TableSpecError(ValueError):
    """A table spec the user has to fix; the message names the entry."""


# ------------------------------------------------------------------------------------ model
@dataclass
class Source:
    """Where a paper number comes from."""

    name: str
    paper: str
    where: str = ""
    split: str = ""
    protocol: str = ""
    status: str = ""
    note: str = ""

    def describe(self) -> str:
        parts = [self.paper, self.where, self.split, self.protocol]
        text = "; ".join(p for p in parts if p)
        return f"{text} ({self.status})" if self.status else text


@dataclass
class Column:
    name: str
    metric: str
    label: str
    scale: float = 1.0
    digits: int = 1
    note: str = ""

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


@dataclass
class PaperCell:
    value: float
    source: Source | None
    tolerance: float | None
    note: str = ""


@dataclass
class RowProfile:
    base: list[str] | None = None
    override: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    skip: bool = False


@dataclass
class Row:
    name: str
    label: str
    section: str
    vars: dict[str, Any]
    override: dict[str, Any]
    paper: dict[str, PaperCell]
    profiles: dict[str, RowProfile]
    note: str = ""
    derived: tuple[str, ...] = ()  # the table's derived var names (resolved per profile at plan time)

    def in_profile(self, profile: str) -> bool:
        return not self.profiles.get(profile, RowProfile()).skip


@dataclass
class DataSpec:
    """How ``--data-root DIR`` reaches a profile's configs: ``DIR/<dir>`` becomes the config value
    at ``key`` (a row may name another ``dir``)."""

    key: str
    dir: str = ""
    help: str = ""


@dataclass
class Profile:
    name: str
    description: str
    base: list[str]
    override: dict[str, Any]
    seeds: int = 1
    slots: int = 1
    compare: bool = True
    data: DataSpec | None = None
    note: str = ""
    trained: TrainedFloor | None = None


@dataclass(frozen=True)
class TrainedFloor:
    """A row whose ``column`` cell has a mean under ``min`` (in the column's scaled units) is not
    trained enough to be judged: every comparison with one of its cells is not resolved."""

    column: str
    min: float


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


@dataclass
class Check:
    name: str
    comparisons: list[Comparison]
    paper: str = ""
    profiles: list[str] | None = None

    def applies(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles


@dataclass
class Plot:
    name: str
    kind: str
    title: str = ""
    rows: list[str] | None = None
    columns: list[str] | None = None
    metric: str = ""
    count: str = ""
    var: str = ""
    scale: float = 1.0
    ylabel: str = ""
    xlabel: str = ""


@dataclass
class TableSpec:
    path: Path
    table: str
    title: str
    description: str
    sources: dict[str, Source]
    columns: dict[str, Column]
    rows: dict[str, Row]
    profiles: dict[str, Profile]
    checks: list[Check]
    plots: list[Plot]
    epoch: str = "last"
    select: str | None = None
    select_mode: str = "max"
    tolerance: float | None = None
    derive: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise TableSpecError(f"profile {name!r}: not in table {self.table} (profiles: {', '.join(self.profiles)})")
        return self.profiles[name]

    def rows_in(self, profile: str) -> list[Row]:
        return [row for row in self.rows.values() if row.in_profile(profile)]


# ------------------------------------------------------------------------------ dict helpers
def template_fields(template: str) -> set[str]:
    """The ``{name}`` fields of a format string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


# ---------------------------------------------------------------------------------- parsing
def _mapping(where: str, value: Any, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise TableSpecError(f"{where}: missing (expected a mapping)")
        return {}
    if not isinstance(value, dict):
        raise TableSpecError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _unknown(where: str, raw: dict[str, Any], allowed: set[str]) -> None:
    bad = sorted(set(map(str, raw)) - allowed)
    if bad:
        prefix = f"{where}." if where else ""
        raise TableSpecError(f"{prefix}{bad[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _text(where: str, value: Any, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise TableSpecError(f"{where}: expected text, got {type(value).__name__}")
    return str(value).strip()


def _number(where: str, value: Any) -> float:
    if isinstance(value, str):  # YAML reads 1e-4 (without a dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise TableSpecError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise TableSpecError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TableSpecError(f"{where}: expected an integer >= 1, got {value!r}")
    return value


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or "/" in value:
        raise TableSpecError(f"{where}: {value!r} is not a valid name (letters, digits, '_', '-', '.')")
    return value


def _overrides(where: str, raw: Any) -> dict[str, Any]:
    raw = _mapping(where, raw)
    for key in raw:
        if not isinstance(key, str) or not _KEY.match(key):
            raise TableSpecError(f"{where}.{key}: not a dotted config key (such as model.init_args.optimizer.init_args.lr)")
        if key.split(".")[0] == "run":
            raise TableSpecError(f"{where}.{key}: the run section belongs to the runner (name, group, job_type, wandb_id)")
    return dict(raw)


def resolve_config_path(path: str) -> Path:
    """A config path as written in a spec: absolute, relative to the working directory, or
    relative to the repository root (so a spec works from any directory)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


def _bases(where: str, raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) and p for p in raw):
        raise TableSpecError(f"{where}: give a config file or a list of config files")
    for path in raw:
        if not resolve_config_path(path).is_file():
            raise TableSpecError(f"{where}: config file {path} not found")
    return list(raw)


def _source(where: str, name: str, raw: Any) -> Source:
    if isinstance(raw, str):
        raw = {"paper": raw}
    raw = _mapping(where, raw)
    _unknown(where, raw, set(SOURCE_FIELDS))
    if not raw.get("paper"):
        raise TableSpecError(f"{where}.paper: missing (the paper, repository or page the numbers come from)")
    return Source(name=name, **{k: _text(f"{where}.{k}", raw.get(k)) for k in SOURCE_FIELDS})


def _cell(where: str, raw: Any, sources: dict[str, Source], default_source: Source | None, default_tol: float | None) -> PaperCell:
    if not isinstance(raw, dict):
        raw = {"value": raw}
    _unknown(where, raw, CELL_FIELDS)
    if "value" not in raw:
        raise TableSpecError(f"{where}.value: missing")
    value = _number(f"{where}.value", raw["value"])
    source = default_source
    if raw.get("source") is not None:
        ref = raw["source"]
        if isinstance(ref, str) and ref in sources:
            source = sources[ref]
        elif isinstance(ref, dict):
            source = _source(f"{where}.source", f"{where}.source", ref)
        else:
            raise TableSpecError(f"{where}.source: {ref!r} is not one of the sources ({', '.join(sources) or 'none defined'})")
    if source is None:
        raise TableSpecError(f"{where}.source: every paper number needs a source (set it here or a table-level `source:`)")
    tolerance = default_tol
    if "tolerance" in raw:
        tolerance = None if raw["tolerance"] is None else _number(f"{where}.tolerance", raw["tolerance"])
        if tolerance is not None and tolerance < 0:
            raise TableSpecError(f"{where}.tolerance: must be >= 0, got {tolerance}")
    return PaperCell(value=value, source=source, tolerance=tolerance, note=_text(f"{where}.note", raw.get("note")))


def _ref(where: str, text: Any, rows: dict[str, Row], columns: dict[str, Column]) -> CellRef:
    match = _REF.match(text) if isinstance(text, str) else None
    if not match:
        raise TableSpecError(f"{where}: {text!r} is not a cell reference <row>.<column>")
    row, column = match.group(1), match.group(2)
    if row not in rows:
        raise TableSpecError(f"{where}: {row!r} is not a row (rows: {', '.join(rows)})")
    if column not in columns:
        raise TableSpecError(f"{where}: {column!r} is not a column (columns: {', '.join(columns)})")
    if not columns[column].has_cell(rows[row]):
        raise TableSpecError(f"{where}: row {row} has no {column} cell (it lacks a variable of {columns[column].metric!r})")
    return CellRef(row, column)


def _comparison(where: str, text: Any, rows: dict[str, Row], columns: dict[str, Column]) -> Comparison:
    if not isinstance(text, str):
        raise TableSpecError(f"{where}: expected 'row.column < row.column', got {text!r}")
    for op in OPERATORS:
        if op in text:
            left, right = text.split(op, 1)
            return Comparison(_ref(where, left, rows, columns), op, _ref(where, right, rows, columns))
    raise TableSpecError(f"{where}: {text!r} has no comparison operator ({', '.join(OPERATORS)})")


def load_table(name_or_path: str | Path, tables_dir: Path | None = None) -> TableSpec:
    """Read and check a table spec: a name in ``experiments/tables`` or a path."""
    path = table_path(name_or_path, tables_dir)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise TableSpecError(f"{path}{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    return parse_table(raw, path)


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
    if not isinstance(raw, dict):
        raise TableSpecError(f"{path}: a table spec is a mapping (table, columns, rows, profiles, ...)")
    _unknown("", raw, TOP_LEVEL)
    table = _name("table", raw.get("table", path.stem))
    title = _text("title", raw.get("title"), table)
    description = _text("description", raw.get("description"))

    sources = {}
    for name, value in _mapping("sources", raw.get("sources")).items():
        sources[_name(f"sources.{name}", name)] = _source(f"sources.{name}", name, value)
    default_source = None
    if raw.get("source") is not None:
        if raw["source"] not in sources:
            raise TableSpecError(f"source: {raw['source']!r} is not one of the sources ({', '.join(sources) or 'none defined'})")
        default_source = sources[raw["source"]]
    elif len(sources) == 1:
        default_source = next(iter(sources.values()))
    default_tol = None if raw.get("tolerance") is None else _number("tolerance", raw["tolerance"])
    if default_tol is not None and default_tol < 0:
        raise TableSpecError(f"tolerance: must be >= 0, got {default_tol}")
    epoch = raw.get("epoch", "last")
    if epoch not in ("last", "best"):
        raise TableSpecError(f"epoch: must be last or best, got {epoch!r}")
    select = raw.get("select")
    if select is not None and not isinstance(select, str):
        raise TableSpecError(f"select: expected a logged metric name such as val/acc, got {select!r}")
    select_mode = raw.get("select_mode", "max")
    if select_mode not in ("max", "min"):
        raise TableSpecError(f"select_mode: must be max or min, got {select_mode!r}")

    # -- columns
    columns: dict[str, Column] = {}
    raw_columns = _mapping("columns", raw.get("columns"), required=True)
    if not raw_columns:
        raise TableSpecError("columns: a table needs at least one column")
    for name, value in raw_columns.items():
        where = f"columns.{name}"
        _name(where, name)
        if isinstance(value, str):
            value = {"metric": value}
        value = _mapping(where, value)
        _unknown(where, value, COLUMN_FIELDS)
        metric = value.get("metric")
        if not isinstance(metric, str) or not metric:
            raise TableSpecError(f"{where}.metric: missing (a logged metric such as val/acc, may hold {{row var}} fields)")
        try:
            template_fields(metric)
        except ValueError as error:
            raise TableSpecError(f"{where}.metric: bad template {metric!r}: {error}") from None
        digits = value.get("digits", 1)
        if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 6:
            raise TableSpecError(f"{where}.digits: expected an integer from 0 to 6, got {digits!r}")
        columns[name] = Column(
            name=name, metric=metric, label=_text(f"{where}.label", value.get("label"), name),
            scale=_number(f"{where}.scale", value.get("scale", 1.0)), digits=digits, note=_text(f"{where}.note", value.get("note")),
        )

    # -- profiles (before rows: rows may name a profile)
    profiles: dict[str, Profile] = {}
    raw_profiles = _mapping("profiles", raw.get("profiles"), required=True)
    if not raw_profiles:
        raise TableSpecError("profiles: a table needs at least one profile (quick, paper)")
    for name, value in raw_profiles.items():
        where = f"profiles.{name}"
        _name(where, name)
        value = _mapping(where, value, required=True)
        _unknown(where, value, PROFILE_FIELDS)
        if "base" not in value:
            raise TableSpecError(f"{where}.base: missing (the config file(s) every row starts from)")
        data = None
        if value.get("data") is not None:
            d = _mapping(f"{where}.data", value["data"])
            _unknown(f"{where}.data", d, DATA_FIELDS)
            key = d.get("key")
            if not isinstance(key, str) or not _KEY.match(key):
                raise TableSpecError(f"{where}.data.key: the dotted config key of the data root, e.g. data.init_args.source.init_args.root")
            data = DataSpec(key=key, dir=_text(f"{where}.data.dir", d.get("dir")), help=_text(f"{where}.data.help", d.get("help")))
        compare = value.get("compare", True)
        if not isinstance(compare, bool):
            raise TableSpecError(f"{where}.compare: expected true or false, got {compare!r}")
        trained = None
        if value.get("trained") is not None:
            t = _mapping(f"{where}.trained", value["trained"])
            _unknown(f"{where}.trained", t, TRAINED_FIELDS)
            if t.get("column") not in columns:
                raise TableSpecError(f"{where}.trained.column: {t.get('column')!r} is not a column ({', '.join(columns)})")
            trained = TrainedFloor(column=t["column"], min=_number(f"{where}.trained.min", t.get("min")))
        profiles[name] = Profile(
            name=name,
            description=_text(f"{where}.description", value.get("description")),
            base=_bases(f"{where}.base", value["base"]),
            override=_overrides(f"{where}.override", value.get("override")),
            seeds=_positive_int(f"{where}.seeds", value.get("seeds", 1)),
            slots=_positive_int(f"{where}.slots", value.get("slots", 1)),
            compare=compare,
            data=data,
            note=_text(f"{where}.note", value.get("note")),
            trained=trained,
        )

    # -- derived vars: read from each row's composed config, so a row cannot say one thing and build another
    derive: dict[str, str] = {}
    for var, key in _mapping("derive", raw.get("derive")).items():
        if not isinstance(var, str) or not var.isidentifier():
            raise TableSpecError(f"derive.{var}: not a variable name")
        if not isinstance(key, str) or not _KEY.match(key):
            raise TableSpecError(f"derive.{var}: {key!r} is not a dotted config key (such as model.init_args.optimizer.init_args.lr)")
        derive[var] = key

    # -- rows
    rows: dict[str, Row] = {}
    raw_rows = _mapping("rows", raw.get("rows"), required=True)
    if not raw_rows:
        raise TableSpecError("rows: a table needs at least one row")
    all_vars = {str(v) for r in raw_rows.values() if isinstance(r, dict) and isinstance(r.get("vars"), dict) for v in r["vars"]}
    all_vars |= set(derive)
    for column in columns.values():
        unknown = template_fields(column.metric) - all_vars
        if unknown:
            raise TableSpecError(f"columns.{column.name}.metric: {{{sorted(unknown)[0]}}} is not a var of any row")
    for name, value in raw_rows.items():
        where = f"rows.{name}"
        _name(where, name)
        value = _mapping(where, value, required=True)
        _unknown(where, value, ROW_FIELDS)
        variables = _mapping(f"{where}.vars", value.get("vars"))
        for var, v in variables.items():
            if not isinstance(var, str) or not var.isidentifier():
                raise TableSpecError(f"{where}.vars.{var}: not a variable name")
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise TableSpecError(f"{where}.vars.{var}: expected a number or text, got {v!r}")
        row_profiles: dict[str, RowProfile] = {}
        for pname, pvalue in _mapping(f"{where}.profiles", value.get("profiles")).items():
            pwhere = f"{where}.profiles.{pname}"
            if pname not in profiles:
                raise TableSpecError(f"{pwhere}: {pname!r} is not a profile ({', '.join(profiles)})")
            pvalue = _mapping(pwhere, pvalue)
            _unknown(pwhere, pvalue, ROW_PROFILE_FIELDS)
            skip = pvalue.get("skip", False)
            if not isinstance(skip, bool):
                raise TableSpecError(f"{pwhere}.skip: expected true or false, got {skip!r}")
            data_dir = pvalue.get("data_dir")
            if data_dir is not None and profiles[pname].data is None:
                raise TableSpecError(f"{pwhere}.data_dir: profile {pname} has no data section (data.key) to apply it to")
            row_profiles[pname] = RowProfile(
                base=_bases(f"{pwhere}.base", pvalue["base"]) if pvalue.get("base") is not None else None,
                override=_overrides(f"{pwhere}.override", pvalue.get("override")),
                data_dir=None if data_dir is None else _text(f"{pwhere}.data_dir", data_dir),
                skip=skip,
            )
        row = Row(
            name=name, label=_text(f"{where}.label", value.get("label"), name), section=_text(f"{where}.section", value.get("section")),
            vars=dict(variables), override=_overrides(f"{where}.override", value.get("override")), paper={},
            profiles=row_profiles, note=_text(f"{where}.note", value.get("note")), derived=tuple(derive),
        )
        for column, cell in _mapping(f"{where}.paper", value.get("paper")).items():
            cwhere = f"{where}.paper.{column}"
            if column not in columns:
                raise TableSpecError(f"{cwhere}: unknown column (columns: {', '.join(columns)})")
            if not columns[column].has_cell(row):
                missing = sorted(template_fields(columns[column].metric) - set(row.vars))
                raise TableSpecError(f"{cwhere}: the row has no {column} cell: its vars lack {', '.join(missing)} for {columns[column].metric!r}")
            row.paper[column] = _cell(cwhere, cell, sources, default_source, default_tol)
        rows[name] = row
    for pname in profiles:
        if not any(r.in_profile(pname) for r in rows.values()):
            raise TableSpecError(f"profiles.{pname}: every row skips this profile")

    # -- checks
    checks: list[Check] = []
    raw_checks = raw.get("checks") or []
    if not isinstance(raw_checks, list):
        raise TableSpecError("checks: expected a list")
    for i, value in enumerate(raw_checks):
        where = f"checks[{i}]"
        value = _mapping(where, value, required=True)
        _unknown(where, value, CHECK_FIELDS)
        name = _text(f"{where}.name", value.get("name"))
        if not name:
            raise TableSpecError(f"{where}.name: missing (what the check states, e.g. 'deeper is better')")
        where = f"checks[{i}] ({name})"
        comparisons: list[Comparison] = []
        if ("order" in value) == ("all" in value):
            raise TableSpecError(f"{where}: give either order: [cells, increasing] or all: ['a < b', ...]")
        if "order" in value:
            order = value["order"]
            if not isinstance(order, list) or len(order) < 2:
                raise TableSpecError(f"{where}.order: give two or more cells <row>.<column>, in increasing order")
            refs = [_ref(f"{where}.order[{j}]", text, rows, columns) for j, text in enumerate(order)]
            comparisons = [Comparison(a, "<", b) for a, b in zip(refs, refs[1:])]
        else:
            items = value["all"]
            if isinstance(items, str):
                items = [items]
            if not isinstance(items, list) or not items:
                raise TableSpecError(f"{where}.all: give a list of comparisons such as 'hg2.halfway < hg2.final'")
            comparisons = [_comparison(f"{where}.all[{j}]", text, rows, columns) for j, text in enumerate(items)]
        check_profiles = value.get("profiles")
        if check_profiles is not None:
            if isinstance(check_profiles, str):
                check_profiles = [check_profiles]
            bad = [p for p in check_profiles if p not in profiles]
            if bad:
                raise TableSpecError(f"{where}.profiles: {bad[0]!r} is not a profile ({', '.join(profiles)})")
        if check_profiles is not None:
            for comparison in comparisons:
                for ref in (comparison.left, comparison.right):
                    skipped = [p for p in check_profiles if not rows[ref.row].in_profile(p)]
                    if skipped:
                        raise TableSpecError(f"{where}: row {ref.row} skips profile {skipped[0]}")
        checks.append(Check(name=name, comparisons=comparisons, paper=_text(f"{where}.paper", value.get("paper")), profiles=check_profiles))

    # -- plots
    plots: list[Plot] = []
    raw_plots = raw.get("plots") or []
    if not isinstance(raw_plots, list):
        raise TableSpecError("plots: expected a list")
    names: set[str] = set()
    for i, value in enumerate(raw_plots):
        where = f"plots[{i}]"
        value = _mapping(where, value, required=True)
        _unknown(where, value, PLOT_FIELDS)
        name = _name(f"{where}.name", value.get("name"))
        where = f"plots.{name}"
        if name in names:
            raise TableSpecError(f"{where}: duplicate plot name")
        names.add(name)
        kind = value.get("kind")
        if kind not in PLOT_KINDS:
            raise TableSpecError(f"{where}.kind: must be one of {', '.join(PLOT_KINDS)}, got {kind!r}")
        plot_rows = value.get("rows")
        if plot_rows is not None:
            if not isinstance(plot_rows, list) or not plot_rows:
                raise TableSpecError(f"{where}.rows: give a list of rows")
            for r in plot_rows:
                if r not in rows:
                    raise TableSpecError(f"{where}.rows: {r!r} is not a row (rows: {', '.join(rows)})")
        plot_columns = value.get("columns")
        if plot_columns is not None:
            if isinstance(plot_columns, str):
                plot_columns = [plot_columns]
            for c in plot_columns:
                if c not in columns:
                    raise TableSpecError(f"{where}.columns: {c!r} is not a column (columns: {', '.join(columns)})")
        plot = Plot(
            name=name, kind=kind, title=_text(f"{where}.title", value.get("title")), rows=plot_rows, columns=plot_columns,
            metric=_text(f"{where}.metric", value.get("metric")), count=_text(f"{where}.count", value.get("count")),
            var=_text(f"{where}.var", value.get("var")), scale=_number(f"{where}.scale", value.get("scale", 1.0)),
            ylabel=_text(f"{where}.ylabel", value.get("ylabel")), xlabel=_text(f"{where}.xlabel", value.get("xlabel")),
        )
        plotted = plot_rows or list(rows)
        if kind == "per_output":
            if "k" not in template_fields(plot.metric):
                raise TableSpecError(f"{where}.metric: a per_output plot needs a metric template with {{k}} (the output), e.g. val/acc_head{{k}}")
            if not plot.count:
                raise TableSpecError(f"{where}.count: the row var that holds each row's number of outputs")
            for r in plotted:
                if plot.count not in derive:
                    count = rows[r].vars.get(plot.count)
                    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                        raise TableSpecError(f"{where}: row {r} needs an integer var {plot.count!r} (its number of outputs)")
                missing = template_fields(plot.metric) - {"k"} - set(rows[r].vars) - set(derive)
                if missing:
                    raise TableSpecError(f"{where}.metric: row {r} lacks the var {sorted(missing)[0]!r}")
        elif kind == "against_var":
            if not plot.var:
                raise TableSpecError(f"{where}.var: the numeric row var on the x axis")
            for r in plotted:
                if plot.var not in derive and not isinstance(rows[r].vars.get(plot.var), (int, float)):
                    raise TableSpecError(f"{where}: row {r} needs a numeric var {plot.var!r}")
        plots.append(plot)

    return TableSpec(
        path=path, table=table, title=title, description=description, sources=sources, columns=columns, rows=rows,
        profiles=profiles, checks=checks, plots=plots, epoch=epoch, select=select, select_mode=select_mode,
        tolerance=default_tol, derive=derive, raw=raw,
    )
