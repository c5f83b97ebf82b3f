"""The catalog's integrity checks (SQL returning a number of violations), run after every restore and drill."""

from __future__ import annotations

import asyncpg

from releasegate_platform.pgtools.postgres import STATEMENT_TIMEOUT


async def integrity(conn: asyncpg.Connection, checks: dict[str, str]) -> list[dict]:
    """Run each integrity check (SQL returning its number of violations); a failing query counts as violated."""
    results = []
    for name, sql in checks.items():
        try:
            violations = int(await conn.fetchval(sql) or 0)
            results.append({"name": name, "violations": violations, "passed": violations == 0})
        except asyncpg.PostgresError as exc:
            results.append({"name": name, "violations": None, "passed": False, "error": str(exc)})
        except TimeoutError:
            results.append(
                {"name": name, "violations": None, "passed": False, "error": f"no answer within {STATEMENT_TIMEOUT:g}s"}
            )
    return results
