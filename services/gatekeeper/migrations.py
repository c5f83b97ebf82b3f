"""Lint SQL schema migrations for the release gate: is each one an expand (old code keeps working) or a
contract (old code breaks), and what in it is unsafe for a zero-downtime deploy.

Statements are split and parsed by PostgreSQL's own parser (pglast), so dollar quoting, comments and string
literals cannot hide a statement. What the lint cannot judge is high risk, never silently safe: `DO` blocks,
procedure and function calls that run during the migration (`CALL`, `SELECT f(...)`, a user function in an
UPDATE or a DEFAULT; PERFORM only exists inside DO blocks and functions), `DROP SCHEMA`, `DROP ... CASCADE`,
and any statement type it does not know. Those are errors (the gate blocks them with the reason), make the
migration a contract that may rewrite data, and set the report's `risk` to high."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pglast import ast, parse_sql, visitors
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType, TransactionStmtKind, VariableSetKind
from pglast.parser import ParseError, split
from pglast.stream import RawStream

Severity = Literal["error", "warning"]
Kind = Literal["expand", "contract"]
Risk = Literal["high", "normal"]

# Rules for what the lint cannot judge: the migration may do anything, so it is high risk.
HIGH_RISK_RULES = frozenset(
    {"parse_error", "do_block", "function_call", "drop_schema", "drop_cascade", "unrecognised_statement"}
)
# Rules whose presence means old code breaks (or may break) once the migration runs.
CONTRACT_RULES = (
    frozenset({"drop_column", "drop_table", "rename", "not_null_without_default", "type_change", "set_not_null"})
    | HIGH_RISK_RULES
)

# Built-in functions that only compute a value: calling them in a migration is no hidden effect. Any other
# function (a user's, or a built-in with side effects such as pg_sleep, set_config, dblink or lo_import) is.
SAFE_FUNCTIONS = frozenset(
    {
        "abs",
        "array_agg",
        "array_length",
        "avg",
        "bool_and",
        "bool_or",
        "btrim",
        "ceil",
        "ceiling",
        "char_length",
        "clock_timestamp",
        "concat",
        "concat_ws",
        "count",
        "date_part",
        "date_trunc",
        "floor",
        "format",
        "gen_random_uuid",
        "greatest",
        "json_build_array",
        "json_build_object",
        "jsonb_array_elements",
        "jsonb_array_length",
        "jsonb_build_array",
        "jsonb_build_object",
        "jsonb_set",
        "jsonb_strip_nulls",
        "least",
        "left",
        "length",
        "lower",
        "ltrim",
        "make_interval",
        "max",
        "md5",
        "min",
        "nextval",
        "now",
        "octet_length",
        "position",
        "regexp_replace",
        "replace",
        "right",
        "round",
        "rtrim",
        "split_part",
        "statement_timestamp",
        "string_agg",
        "substr",
        "substring",
        "sum",
        "timezone",
        "to_char",
        "to_date",
        "to_json",
        "to_jsonb",
        "to_number",
        "to_timestamp",
        "transaction_timestamp",
        "trim",
        "trunc",
        "upper",
        "uuid_generate_v4",
    }
)
# Statements whose function calls run during the migration, over existing rows (view and function bodies,
# and defaults of a new, empty table, run later, under the new code).
_RUNS_CALLS = (
    ast.SelectStmt,
    ast.InsertStmt,
    ast.UpdateStmt,
    ast.DeleteStmt,
    ast.MergeStmt,
    ast.CreateTableAsStmt,
    ast.AlterTableStmt,
    ast.IndexStmt,
)
# Statements that change no data and break no old code: recognised, nothing to report.
_HARMLESS = (
    ast.CommentStmt,
    ast.CreateSeqStmt,
    ast.CreateEnumStmt,
    ast.CompositeTypeStmt,
    ast.CreateDomainStmt,
    ast.AlterEnumStmt,
    ast.VariableShowStmt,
)

# squawk rules that restate a concern this module already decides with more context (it knows which tables
# are new in the migration, and pglast is PostgreSQL's own parser), so squawk's opinion on them is a duplicate.
_SQUAWK_RULES_DECIDED_HERE = frozenset(
    {
        "ban-drop-column",
        "ban-drop-table",
        "renaming-column",
        "renaming-table",
        "adding-required-field",
        "adding-not-nullable-field",
        "changing-column-type",
        "require-concurrent-index-creation",
        "require-lock-timeout",
        "syntax-error",
    }
)

_SQUAWK_TIMEOUT_S = 30
_RELATIONS = {
    ObjectType.OBJECT_TABLE: "TABLE",
    ObjectType.OBJECT_FOREIGN_TABLE: "FOREIGN TABLE",
    ObjectType.OBJECT_VIEW: "VIEW",
    ObjectType.OBJECT_MATVIEW: "MATERIALIZED VIEW",
}
# serial columns get a sequence default, so NOT NULL on them does not make old inserts fail.
_SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
_FILLED_BY_DATABASE = frozenset({ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED})
_ZERO_TIMEOUT = re.compile(r"\s*0+(\.0*)?\s*[a-z]*\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    """One thing in a migration the release gate should know about."""

    rule: str
    severity: Severity
    statement: str
    message: str


@dataclass(frozen=True)
class MigrationReport:
    """The verdict on one migration: its kind, what it removes and adds, and why."""

    name: str
    kind: Kind
    findings: tuple[Finding, ...]
    drops: tuple[str, ...]
    adds: tuple[str, ...]
    rewrites_data: bool

    @property
    def risk(self) -> Risk:
        return "high" if any(f.rule in HIGH_RISK_RULES for f in self.findings) else "normal"

    def as_input(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "findings": [
                {"rule": f.rule, "severity": f.severity, "statement": f.statement, "message": f.message}
                for f in self.findings
            ],
            "drops": list(self.drops),
            "adds": list(self.adds),
            "rewrites_data": self.rewrites_data,
            "risk": self.risk,
        }


@dataclass
class _Scan:
    """What the statements read so far say about the migration."""

    findings: list[Finding] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    new_tables: set[str] = field(default_factory=set)
    rewrites_data: bool = False
    session_lock_timeout: bool = False
    local_lock_timeout: bool = False
    unguarded: list[tuple[str, str]] = field(default_factory=list)

    def find(self, rule: str, severity: Severity, statement: str, message: str) -> None:
        self.findings.append(Finding(rule, severity, statement, message))

    def existing(self, tables: Iterable[str]) -> list[str]:
        # Tables created earlier in this migration have no old code and no traffic yet: nothing to break or block.
        return [t for t in tables if t not in self.new_tables]

    def takes_lock(self, statement: str, tables: Iterable[str]) -> None:
        locked = self.existing(tables)
        if locked and not (self.session_lock_timeout or self.local_lock_timeout):
            self.unguarded.append((statement, locked[0]))


def analyse(name: str, sql: str, *, use_squawk: bool = True) -> MigrationReport:
    """Classify one migration; `use_squawk=False` keeps the analysis in-process (no subprocess)."""
    try:
        statements = [(raw.stmt, raw.stmt_location, _text(sql, raw)) for raw in parse_sql(sql)]
    except ParseError as exc:
        return _unparseable(name, sql, exc)
    scan = _Scan()
    for node, _, text in statements:
        _judge(scan, node, text)
    if scan.unguarded:
        scan.find("missing_lock_timeout", "warning", scan.unguarded[0][0], _lock_timeout_message(scan.unguarded))
    findings = tuple(scan.findings)
    if use_squawk and squawk_available():
        findings += tuple(_squawk_findings(sql, [(start, text) for _, start, text in statements]))
    kind: Kind = "contract" if any(f.rule in CONTRACT_RULES for f in findings) else "expand"
    return MigrationReport(
        name, kind, findings, tuple(dict.fromkeys(scan.drops)), tuple(dict.fromkeys(scan.adds)), scan.rewrites_data
    )


def analyse_all(migrations: list[tuple[str, str]], *, use_squawk: bool = True) -> list[MigrationReport]:
    return [analyse(name, sql, use_squawk=use_squawk) for name, sql in migrations]


def squawk_available() -> bool:
    """Whether squawk runs here; decided once per process so every migration in a run gets the same treatment."""
    return _squawk() is not None


@functools.cache
def _squawk() -> str | None:
    binary = shutil.which("squawk")
    if binary is None:
        return None
    try:
        # A pyenv shim is on PATH even when the active Python has no squawk: only a real run tells.
        ran = subprocess.run([binary, "--version"], capture_output=True, timeout=_SQUAWK_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return binary if ran.returncode == 0 else None


def _text(sql: str, raw: ast.RawStmt) -> str:
    # stmt_len 0 means "up to the end of the input" (the last statement without a semicolon).
    end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(sql)
    return sql[raw.stmt_location : end].strip()


def _unparseable(name: str, sql: str, exc: ParseError) -> MigrationReport:
    message, location = exc.args[0], exc.args[1] if len(exc.args) > 1 else None
    statement = sql.strip()
    if location is not None:
        try:
            statement = next(
                (
                    sql[s].strip()
                    for s in split(sql, with_parser=False, only_slices=True)
                    if s.start <= location < s.stop
                ),
                statement,
            )
        except ParseError:
            pass  # the scanner failed too (e.g. an unterminated quote): the whole migration is the statement
    # Unknown is unsafe: an unreadable migration is treated as a contract that may rewrite data.
    finding = Finding(
        "parse_error",
        "error",
        statement,
        f"PostgreSQL's parser rejects migration {name} ({message}), so none of it can be judged safe",
    )
    return MigrationReport(name, "contract", (finding,), (), (), True)


def _judge(scan: _Scan, node: ast.Node, text: str) -> None:
    """One statement: its own rules, then what runs inside it (function calls, data-modifying sub-statements)."""
    handler = _HANDLERS.get(type(node))
    if handler is not None:
        handler(scan, node, text)
    elif not isinstance(node, _HARMLESS):
        scan.rewrites_data = True
        scan.find(
            "unrecognised_statement",
            "error",
            text,
            f"the migration lint does not know what {_lead(text)}… ({type(node).__name__}) does to a running "
            f"system, so it is treated as high risk: it may lock, rewrite or remove anything; review it by "
            f"hand",
        )
        return
    if isinstance(node, _RUNS_CALLS):
        _calls(scan, node, text)
    for nested in _nested_writes(node):
        verb = {ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE"}.get(type(nested), "MERGE")
        _rewrites(scan, verb, [_relation(nested.relation)], text)


def _lead(text: str) -> str:
    return " ".join(text.split()[:2])[:60]


class _Walk(visitors.Visitor):
    """Every FuncCall and data-modifying statement below a statement."""

    def __init__(self) -> None:
        self.calls: list[ast.FuncCall] = []
        self.writes: list[ast.Node] = []

    def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:
        self.calls.append(node)

    def visit_InsertStmt(self, ancestors: Any, node: ast.Node) -> None:
        self.writes.append(node)

    visit_UpdateStmt = visit_DeleteStmt = visit_MergeStmt = visit_InsertStmt


def _walk(node: ast.Node) -> _Walk:
    walk = _Walk()
    walk(node)
    return walk


def _nested_writes(node: ast.Node) -> list[ast.Node]:
    # `WITH d AS (DELETE FROM orders RETURNING *) SELECT ...` changes data under a SELECT.
    return [w for w in _walk(node).writes if w is not node]


def _calls(scan: _Scan, node: ast.Node, text: str) -> None:
    unknown = sorted({name for name in (_function(c) for c in _walk(node).calls) if name not in SAFE_FUNCTIONS})
    if unknown:
        scan.rewrites_data = True
        scan.find(
            "function_call",
            "error",
            text,
            f"the migration calls {', '.join(f'{n}()' for n in unknown)}: what a function does (write, lock, "
            f"drop, call out) is not in the migration, so it is treated as high risk; review it by hand",
        )


def _function(call: ast.FuncCall) -> str:
    names = [n.sval for n in call.funcname]
    # Only the built-in schema's functions are known; public.lower() may be anything.
    return names[-1] if len(names) == 1 or names[0] == "pg_catalog" else ".".join(names)


def _name(names: Sequence[str | None]) -> str:
    parts = [n for n in names if n]
    if len(parts) > 1 and parts[-2] == "public":
        parts = parts[-1:]
    return ".".join(parts[-2:])


def _relation(rv: ast.RangeVar) -> str:
    return _name([rv.schemaname, rv.relname])


def _strings(names: Sequence[ast.String]) -> str:
    return _name([n.sval for n in names])


def _on_create_table(scan: _Scan, node: ast.CreateStmt, text: str) -> None:
    table = _relation(node.relation)
    scan.new_tables.add(table)
    scan.adds.append(table)


def _on_create_table_as(scan: _Scan, node: ast.CreateTableAsStmt, text: str) -> None:
    table = _relation(node.into.rel)
    scan.new_tables.add(table)
    scan.adds.append(table)


def _on_create_view(scan: _Scan, node: ast.ViewStmt, text: str) -> None:
    scan.adds.append(_relation(node.view))


def _on_create_function(scan: _Scan, node: ast.CreateFunctionStmt, text: str) -> None:
    scan.adds.append(_strings(node.funcname))


def _on_create_index(scan: _Scan, node: ast.IndexStmt, text: str) -> None:
    table = _relation(node.relation)
    if node.idxname:
        scan.adds.append(_name([node.relation.schemaname, node.idxname]))
    # CONCURRENTLY takes a lock that lets reads and writes through, so neither finding applies to it.
    if node.concurrent:
        return
    scan.takes_lock(text, [table])
    if scan.existing([table]):
        index = f"INDEX {node.idxname}" if node.idxname else "INDEX"
        scan.find(
            "index_not_concurrent",
            "error",
            text,
            f"CREATE {index} ON {table} without CONCURRENTLY blocks every write to {table} until the index is built",
        )


def _on_alter_table(scan: _Scan, node: ast.AlterTableStmt, text: str) -> None:
    table = _relation(node.relation)
    scan.takes_lock(text, [table])
    existing = bool(scan.existing([table]))
    for cmd in node.cmds or ():
        column = f"{table}.{cmd.name}"
        if cmd.subtype == AlterTableType.AT_AddColumn:
            scan.adds.append(f"{table}.{cmd.def_.colname}")
            if existing and _required_without_default(cmd.def_):
                scan.find(
                    "not_null_without_default",
                    "error",
                    text,
                    f"ALTER TABLE {table} ADD COLUMN {cmd.def_.colname} is NOT NULL without a DEFAULT: "
                    f"old code that inserts into {table} without {cmd.def_.colname} fails",
                )
        elif cmd.subtype == AlterTableType.AT_DropColumn:
            scan.drops.append(column)
            if cmd.behavior == DropBehavior.DROP_CASCADE:
                scan.rewrites_data = True
                scan.find(
                    "drop_cascade",
                    "error",
                    text,
                    f"ALTER TABLE {table} DROP COLUMN {cmd.name} CASCADE also drops every view and "
                    f"constraint that uses {column}; which ones is not in the migration, so it is high risk",
                )
            if existing:
                scan.find(
                    "drop_column",
                    "error",
                    text,
                    f"ALTER TABLE {table} DROP COLUMN {cmd.name} is destructive: old code that still "
                    f"reads {column} breaks",
                )
        elif cmd.subtype == AlterTableType.AT_SetNotNull and existing:
            scan.find(
                "set_not_null",
                "error",
                text,
                f"ALTER TABLE {table} ALTER COLUMN {cmd.name} SET NOT NULL makes {column} required: old "
                f"code that inserts into {table} without {cmd.name} fails, and the whole table is "
                f"scanned under an exclusive lock",
            )
        elif cmd.subtype == AlterTableType.AT_AlterColumnType and existing:
            # The old type is not in the migration, so a rewrite cannot be ruled out: assume one.
            scan.rewrites_data = True
            scan.find(
                "type_change",
                "error",
                text,
                f"ALTER TABLE {table} ALTER COLUMN {cmd.name} TYPE {RawStream()(cmd.def_.typeName)} "
                f"changes the type of {column}: old code may not read or write the new type, and the "
                f"table can be rewritten under an exclusive lock",
            )


def _required_without_default(column: ast.ColumnDef) -> bool:
    constraints = {c.contype for c in column.constraints or ()}
    required = column.is_not_null or bool(constraints & {ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY})
    filled = bool(constraints & _FILLED_BY_DATABASE) or column.typeName.names[-1].sval in _SERIAL_TYPES
    return required and not filled


def _on_rename(scan: _Scan, node: ast.RenameStmt, text: str) -> None:
    if node.relation is None:
        return
    table = _relation(node.relation)
    if node.renameType == ObjectType.OBJECT_COLUMN:
        old, new = f"{table}.{node.subname}", f"{table}.{node.newname}"
    elif node.renameType in _RELATIONS:
        old, new = table, _name([node.relation.schemaname, node.newname])
        if table in scan.new_tables:
            scan.new_tables.add(new)
    else:
        return  # indexes, constraints, triggers: old code does not name them
    scan.takes_lock(text, [table])
    scan.drops.append(old)
    scan.adds.append(new)
    if scan.existing([table]):
        scan.find(
            "rename",
            "error",
            text,
            f"Renaming {old} to {new} is destructive: old code that still uses {old} breaks; add {new} "
            f"next to it and remove {old} in a later release",
        )


def _on_drop(scan: _Scan, node: ast.DropStmt, text: str) -> None:
    names = [_dropped(o) for o in node.objects]
    if not node.concurrent:
        scan.takes_lock(text, names)
    if node.behavior == DropBehavior.DROP_CASCADE:
        scan.rewrites_data = True
        scan.find(
            "drop_cascade",
            "error",
            text,
            f"DROP ... CASCADE also drops every object that depends on {', '.join(names)} (views, foreign "
            f"keys, columns of other tables); which ones is not in the migration, so it is high risk",
        )
    if node.removeType == ObjectType.OBJECT_SCHEMA:
        scan.drops.extend(names)
        scan.rewrites_data = True
        scan.find(
            "drop_schema",
            "error",
            text,
            f"DROP SCHEMA {', '.join(names)} removes whatever the schema holds (tables and their data, "
            f"functions, types); what that is is not in the migration, so it is high risk",
        )
        return
    if node.removeType not in _RELATIONS:
        return
    scan.drops.extend(names)
    for dropped in scan.existing(names):
        scan.find(
            "drop_table",
            "error",
            text,
            f"DROP {_RELATIONS[node.removeType]} {dropped} is destructive: old code that still reads {dropped} breaks",
        )


def _dropped(obj: tuple[ast.String, ...] | ast.Node) -> str:
    if isinstance(obj, tuple):
        return _strings(obj)
    if isinstance(obj, ast.ObjectWithArgs):
        return _strings(obj.objname)
    if isinstance(obj, ast.TypeName):
        return _strings(obj.names)
    return obj.sval  # schemas, extensions, languages: a bare name


def _on_insert(scan: _Scan, node: ast.InsertStmt, text: str) -> None:
    _rewrites(scan, "INSERT", [_relation(node.relation)], text)


def _on_merge(scan: _Scan, node: ast.MergeStmt, text: str) -> None:
    _rewrites(scan, "MERGE", [_relation(node.relation)], text)


def _on_select(scan: _Scan, node: ast.SelectStmt, text: str) -> None:
    # SELECT ... INTO creates a table like CREATE TABLE AS; a plain SELECT only reads (its calls are judged apart).
    if node.intoClause is not None:
        table = _relation(node.intoClause.rel)
        scan.new_tables.add(table)
        scan.adds.append(table)


def _on_create_schema(scan: _Scan, node: ast.CreateSchemaStmt, text: str) -> None:
    if node.schemaname:
        scan.adds.append(node.schemaname)
    for element in node.schemaElts or ():
        _judge(scan, element, text)


def _on_call(scan: _Scan, node: ast.CallStmt, text: str) -> None:
    scan.rewrites_data = True
    scan.find(
        "function_call",
        "error",
        text,
        f"CALL {_function(node.funccall)}() runs a procedure: what it does (write, lock, drop, commit) is not "
        f"in the migration, so it is treated as high risk; review it by hand",
    )


def _on_do(scan: _Scan, node: ast.DoStmt, text: str) -> None:
    scan.rewrites_data = True
    scan.find(
        "do_block",
        "error",
        text,
        "a DO block runs procedural code (PERFORM, EXECUTE of built SQL, loops) that the lint cannot read: it "
        "may lock, rewrite or drop anything, so it is high risk; write the statements out instead",
    )


def _on_update(scan: _Scan, node: ast.UpdateStmt, text: str) -> None:
    _rewrites(scan, "UPDATE", [_relation(node.relation)], text)


def _on_delete(scan: _Scan, node: ast.DeleteStmt, text: str) -> None:
    _rewrites(scan, "DELETE", [_relation(node.relation)], text)


def _on_truncate(scan: _Scan, node: ast.TruncateStmt, text: str) -> None:
    tables = [_relation(r) for r in node.relations]
    scan.takes_lock(text, tables)
    _rewrites(scan, "TRUNCATE", tables, text)


def _rewrites(scan: _Scan, verb: str, tables: list[str], text: str) -> None:
    existing = scan.existing(tables)
    if existing:
        scan.rewrites_data = True
        what = "adds rows to" if verb == "INSERT" else "changes existing rows of"
        scan.find(
            "data_rewrite",
            "warning",
            text,
            f"{verb} {what} {', '.join(existing)}: rolling this release back needs a restore of that data, "
            f"redeploying the old code is not enough",
        )


def _on_set(scan: _Scan, node: ast.VariableSetStmt, text: str) -> None:
    if node.kind == VariableSetKind.VAR_RESET_ALL:
        scan.session_lock_timeout = scan.local_lock_timeout = False
        return
    if node.name != "lock_timeout":
        return
    # lock_timeout = 0 (or DEFAULT / RESET) means "wait forever", the very thing a timeout is for.
    on = node.kind == VariableSetKind.VAR_SET_VALUE and not _ZERO_TIMEOUT.fullmatch(_setting(node.args))
    if node.is_local:
        scan.local_lock_timeout = on
    else:
        scan.session_lock_timeout = on


def _setting(args: Sequence[ast.A_Const] | None) -> str:
    value = args[0].val if args else None
    for attribute in ("sval", "ival", "fval"):
        if hasattr(value, attribute):
            return str(getattr(value, attribute))
    return ""


def _on_transaction(scan: _Scan, node: ast.TransactionStmt, text: str) -> None:
    # SET LOCAL only lasts until the transaction ends.
    if node.kind in (
        TransactionStmtKind.TRANS_STMT_COMMIT,
        TransactionStmtKind.TRANS_STMT_ROLLBACK,
        TransactionStmtKind.TRANS_STMT_PREPARE,
    ):
        scan.local_lock_timeout = False


def _lock_timeout_message(unguarded: list[tuple[str, str]]) -> str:
    tables = ", ".join(dict.fromkeys(table for _, table in unguarded))
    return (
        f"{len(unguarded)} statement(s) lock {tables} with no SET lock_timeout before them: while one waits "
        f"for its lock, every other query on that table queues behind it; run SET lock_timeout first"
    )


_HANDLERS: dict[type, Callable[[_Scan, Any, str], None]] = {
    ast.CreateStmt: _on_create_table,
    ast.CreateTableAsStmt: _on_create_table_as,
    ast.ViewStmt: _on_create_view,
    ast.CreateFunctionStmt: _on_create_function,
    ast.IndexStmt: _on_create_index,
    ast.AlterTableStmt: _on_alter_table,
    ast.RenameStmt: _on_rename,
    ast.DropStmt: _on_drop,
    ast.UpdateStmt: _on_update,
    ast.DeleteStmt: _on_delete,
    ast.TruncateStmt: _on_truncate,
    ast.InsertStmt: _on_insert,
    ast.MergeStmt: _on_merge,
    ast.SelectStmt: _on_select,
    ast.CreateSchemaStmt: _on_create_schema,
    ast.CallStmt: _on_call,
    ast.DoStmt: _on_do,
    ast.VariableSetStmt: _on_set,
    ast.TransactionStmt: _on_transaction,
}


def _squawk_findings(sql: str, statements: list[tuple[int, str]]) -> list[Finding]:
    """squawk's violations as warnings, attributed to the statement they point into; none if squawk fails."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "migration.sql"
            path.write_text(sql, encoding="utf-8")
            # Run in the empty temp dir so a .squawk.toml of whoever calls us cannot change the verdict.
            done = subprocess.run(
                [str(_squawk()), "--reporter", "json", path.name],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=_SQUAWK_TIMEOUT_S,
            )
        # squawk exits 1 when it found violations; anything else is squawk failing.
        violations = json.loads(done.stdout) if done.returncode in (0, 1) else []
        found = sorted(
            (_offset(sql, v["line"], v["column"]), v["rule_name"], v["message"], v.get("help") or "")
            for v in violations
            if v["rule_name"] not in _SQUAWK_RULES_DECIDED_HERE
        )
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return []
    findings: list[Finding] = []
    for offset, rule, message, help_ in found:
        statement = next((s for start, s in reversed(statements) if start <= offset), sql.strip())
        text = f"{message.rstrip('.')}. {help_}" if help_ else message
        finding = Finding(f"squawk:{rule}", "warning", statement, text)
        if finding not in findings:
            findings.append(finding)
    return findings


def _offset(sql: str, line: int, column: int) -> int:
    # squawk counts lines from 0 and columns in UTF-8 bytes.
    lines = sql.split("\n")
    before = sum(len(text) + 1 for text in lines[:line])
    return before + len(lines[line].encode()[:column].decode(errors="ignore")) if line < len(lines) else len(sql)
