"""Migration linting: which migrations are expand or contract, and what is unsafe in them."""

import json

import pytest

from services.gatekeeper import migrations
from services.gatekeeper.migrations import analyse, analyse_all, squawk_available

GUARD = "SET lock_timeout = '2s';\n"


def lint(sql: str) -> migrations.MigrationReport:
    return analyse("042_change", sql, use_squawk=False)


def rules(report: migrations.MigrationReport) -> set[str]:
    return {f.rule for f in report.findings}


def only(report: migrations.MigrationReport, rule: str) -> migrations.Finding:
    [finding] = [f for f in report.findings if f.rule == rule]
    return finding


class TestContractMigrations:
    def test_drop_column_is_contract_and_names_the_column(self):
        report = lint(GUARD + "ALTER TABLE orders DROP COLUMN legacy_note;")
        finding = only(report, "drop_column")
        assert report.kind == "contract" and report.drops == ("orders.legacy_note",)
        assert finding.severity == "error" and finding.statement == "ALTER TABLE orders DROP COLUMN legacy_note"
        assert "old code that still reads orders.legacy_note breaks" in finding.message

    def test_drop_table_is_contract_and_names_each_table(self):
        report = lint(GUARD + "DROP TABLE legacy_carts, coupons;")
        assert report.kind == "contract" and report.drops == ("legacy_carts", "coupons")
        assert [f.rule for f in report.findings] == ["drop_table", "drop_table"]
        assert all(f.severity == "error" for f in report.findings)

    def test_renaming_a_column_drops_the_old_name_and_adds_the_new_one(self):
        report = lint(GUARD + "ALTER TABLE orders RENAME COLUMN note TO remark;")
        assert report.kind == "contract" and only(report, "rename").severity == "error"
        assert report.drops == ("orders.note",) and report.adds == ("orders.remark",)

    def test_renaming_a_table_is_contract(self):
        report = lint(GUARD + "ALTER TABLE carts RENAME TO baskets;")
        assert report.kind == "contract" and report.drops == ("carts",) and report.adds == ("baskets",)
        assert "old code that still uses carts breaks" in only(report, "rename").message

    def test_not_null_column_without_default_breaks_old_inserts(self):
        report = lint(GUARD + "ALTER TABLE orders ADD COLUMN channel text NOT NULL;")
        finding = only(report, "not_null_without_default")
        assert report.kind == "contract" and finding.severity == "error"
        assert "old code that inserts into orders without channel fails" in finding.message

    def test_set_not_null_on_an_existing_column_is_contract(self):
        report = lint(GUARD + "ALTER TABLE orders ALTER COLUMN channel SET NOT NULL;")
        assert report.kind == "contract" and only(report, "set_not_null").severity == "error"

    def test_any_column_type_change_is_contract_and_may_rewrite_rows(self):
        report = lint(GUARD + "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12, 2);")
        finding = only(report, "type_change")
        assert report.kind == "contract" and report.rewrites_data and finding.severity == "error"
        assert "TYPE numeric(12, 2)" in finding.message


class TestExpandMigrations:
    def test_nullable_column_after_lock_timeout_is_expand_without_findings(self):
        report = lint(GUARD + "ALTER TABLE orders ADD COLUMN gift_note text;")
        assert report.kind == "expand" and report.findings == ()
        assert report.adds == ("orders.gift_note",) and not report.rewrites_data

    def test_not_null_column_the_database_fills_is_expand(self):
        report = lint(
            GUARD + "ALTER TABLE orders ADD COLUMN channel text NOT NULL DEFAULT 'web', "
            "ADD COLUMN seq bigserial, ADD COLUMN ref bigint GENERATED ALWAYS AS IDENTITY;"
        )
        assert report.kind == "expand" and report.findings == ()

    def test_new_table_view_function_and_concurrent_index_are_expand_and_listed_as_added(self):
        report = lint(
            GUARD + "CREATE TABLE wishlists (id bigint PRIMARY KEY, sku text NOT NULL);\n"
            "CREATE VIEW open_orders AS SELECT * FROM orders WHERE NOT shipped;\n"
            "CREATE FUNCTION cents(numeric) RETURNS bigint AS 'SELECT ($1 * 100)::bigint' "
            "LANGUAGE sql;\n"
            "CREATE INDEX CONCURRENTLY orders_sku_idx ON orders (sku);"
        )
        assert report.kind == "expand" and report.findings == ()
        assert report.adds == ("wishlists", "open_orders", "cents", "orders_sku_idx")

    def test_changes_to_a_table_created_in_the_same_migration_break_nothing(self):
        report = lint(
            "CREATE TABLE wishlists (id bigint PRIMARY KEY);\n"
            "ALTER TABLE wishlists ADD COLUMN sku text NOT NULL;\n"
            "ALTER TABLE wishlists ALTER COLUMN id TYPE numeric;"
        )
        assert report.kind == "expand" and report.findings == () and not report.rewrites_data


class TestIndexes:
    def test_index_without_concurrently_on_an_existing_table_is_an_error(self):
        report = lint(GUARD + "CREATE INDEX orders_sku_idx ON orders (sku);")
        finding = only(report, "index_not_concurrent")
        assert finding.severity == "error" and "blocks every write to orders" in finding.message
        assert report.kind == "expand"

    def test_index_on_a_table_created_in_the_same_migration_needs_no_concurrently(self):
        report = lint(
            "CREATE TABLE wishlists (id bigint PRIMARY KEY, sku text);\n"
            "CREATE INDEX wishlists_sku_idx ON wishlists (sku);"
        )
        assert report.findings == () and report.kind == "expand"


class TestLockTimeout:
    def test_alter_table_without_lock_timeout_warns_once_and_quotes_the_first_statement(self):
        report = lint("ALTER TABLE orders ADD COLUMN a text;\nDROP INDEX orders_old_idx;")
        finding = only(report, "missing_lock_timeout")
        assert finding.severity == "warning" and finding.statement == "ALTER TABLE orders ADD COLUMN a text"
        assert "2 statement(s)" in finding.message and report.kind == "expand"

    def test_lock_timeout_set_after_the_statement_does_not_guard_it(self):
        report = lint("CREATE INDEX orders_sku_idx ON orders (sku);\n" + GUARD)
        assert "missing_lock_timeout" in rules(report)

    def test_set_local_lock_timeout_guards_only_until_commit(self):
        inside = lint("BEGIN; SET LOCAL lock_timeout = '1s'; ALTER TABLE orders ADD COLUMN a text; COMMIT;")
        after = lint("BEGIN; SET LOCAL lock_timeout = '1s'; COMMIT; ALTER TABLE orders ADD COLUMN a text;")
        assert "missing_lock_timeout" not in rules(inside) and "missing_lock_timeout" in rules(after)

    def test_a_zero_or_reset_lock_timeout_guards_nothing(self):
        for unset in ("SET lock_timeout = 0;", "SET lock_timeout = '0';", GUARD + "RESET lock_timeout;"):
            assert "missing_lock_timeout" in rules(lint(unset + " ALTER TABLE orders ADD COLUMN a text;"))


class TestDataRewrites:
    def test_update_rewrites_data_with_a_warning(self):
        report = lint("UPDATE orders SET channel = 'web' WHERE channel IS NULL;")
        finding = only(report, "data_rewrite")
        assert report.rewrites_data and finding.severity == "warning" and report.kind == "expand"
        assert "needs a restore" in finding.message

    def test_delete_and_truncate_rewrite_data(self):
        for sql in ("DELETE FROM carts WHERE abandoned;", GUARD + "TRUNCATE carts;"):
            report = lint(sql)
            assert report.rewrites_data and "data_rewrite" in rules(report)


class TestUnreadableMigrations:
    def test_sql_the_parser_rejects_is_a_contract_with_the_parser_message(self):
        report = lint(GUARD + "ALTER TABL orders DROP COLUMN note;")
        finding = only(report, "parse_error")
        assert report.kind == "contract" and finding.severity == "error"
        assert 'syntax error at or near "TABL"' in finding.message
        assert finding.statement == "ALTER TABL orders DROP COLUMN note"

    def test_an_unterminated_string_is_reported_not_raised(self):
        report = lint("UPDATE orders SET note = 'oops;")
        assert rules(report) == {"parse_error"} and report.kind == "contract"


class TestNames:
    def test_public_schema_is_stripped_from_object_names(self):
        report = lint(GUARD + "ALTER TABLE public.orders DROP COLUMN legacy_note; DROP TABLE public.coupons;")
        assert report.drops == ("orders.legacy_note", "coupons")
        assert "orders.legacy_note breaks" in only(report, "drop_column").message

    def test_other_schemas_are_kept(self):
        report = lint(GUARD + "ALTER TABLE billing.invoices DROP COLUMN fax;")
        assert report.drops == ("billing.invoices.fax",)


class TestMultipleStatements:
    def test_each_statement_is_judged_and_quoted_on_its_own(self):
        report = lint(
            GUARD + "-- expand first\nALTER TABLE orders ADD COLUMN remark text;\n"
            "UPDATE orders SET remark = note;\n"
            "ALTER TABLE orders DROP COLUMN note;"
        )
        assert [(f.rule, f.statement) for f in report.findings] == [
            ("data_rewrite", "UPDATE orders SET remark = note"),
            ("drop_column", "ALTER TABLE orders DROP COLUMN note"),
        ]
        assert report.adds == ("orders.remark",) and report.drops == ("orders.note",) and report.rewrites_data

    def test_analyse_all_keeps_order_names_and_kinds(self):
        reports = analyse_all(
            [
                ("001_add", GUARD + "ALTER TABLE orders ADD COLUMN remark text;"),
                ("002_drop", GUARD + "ALTER TABLE orders DROP COLUMN note;"),
            ],
            use_squawk=False,
        )
        assert [(r.name, r.kind) for r in reports] == [("001_add", "expand"), ("002_drop", "contract")]

    def test_the_report_reads_as_json(self):
        data = json.loads(json.dumps(lint("ALTER TABLE orders DROP COLUMN note;").as_input()))
        assert data["kind"] == "contract" and data["drops"] == ["orders.note"]
        assert {f["rule"] for f in data["findings"]} == {"drop_column", "missing_lock_timeout"}


class TestSquawk:
    @pytest.mark.skipif(not squawk_available(), reason="squawk is not installed")
    def test_squawk_adds_its_own_rules_as_warnings_without_repeating_ours(self):
        report = analyse(
            "042_change", GUARD + "ALTER TABLE orders ADD COLUMN qty int;\nALTER TABLE orders DROP COLUMN note;"
        )
        extra = [f for f in report.findings if f.rule.startswith("squawk:")]
        assert ("squawk:prefer-bigint-over-int", "ALTER TABLE orders ADD COLUMN qty int") in {
            (f.rule, f.statement) for f in extra
        }
        assert all(f.severity == "warning" for f in extra)
        assert "squawk:ban-drop-column" not in rules(report) and "drop_column" in rules(report)

    def test_a_squawk_that_fails_is_skipped_and_the_analysis_stands(self, monkeypatch):
        monkeypatch.setattr(migrations, "_squawk", lambda: "/bin/false")
        report = analyse("042_change", GUARD + "ALTER TABLE orders DROP COLUMN note;")
        assert rules(report) == {"drop_column"} and report.kind == "contract"


def high(report: migrations.MigrationReport, rule: str) -> migrations.Finding:
    """The one finding of `rule`, after checking it makes the migration high risk: blocked, contract, may
    rewrite data."""
    finding = only(report, rule)
    assert finding.severity == "error" and report.kind == "contract" and report.rewrites_data
    assert report.risk == "high" and report.as_input()["risk"] == "high"
    return finding


class TestWhatTheLintCannotJudgeIsHighRisk:
    def test_a_do_block_is_high_risk_whatever_it_says(self):
        finding = high(lint(GUARD + "DO $$ BEGIN PERFORM refresh_totals(); END $$;"), "do_block")
        assert finding.statement == "DO $$ BEGIN PERFORM refresh_totals(); END $$"
        assert "cannot read" in finding.message

    def test_dollar_quoting_with_a_tag_and_semicolons_inside_is_one_statement(self):
        report = lint(
            GUARD + "DO $body$ BEGIN EXECUTE 'DROP TABLE orders'; EXECUTE $q$DELETE FROM carts;$q$; "
            "END $body$ LANGUAGE plpgsql;\nALTER TABLE orders ADD COLUMN a text;"
        )
        assert high(report, "do_block").statement.endswith("END $body$ LANGUAGE plpgsql")
        assert report.adds == ("orders.a",) and "drop_table" not in rules(report)

    def test_perform_outside_a_block_is_unparseable_and_high_risk(self):
        high(lint("PERFORM refresh_totals();"), "parse_error")

    @pytest.mark.parametrize(
        "sql, called",
        [
            ("SELECT refresh_totals();", "refresh_totals()"),
            ("SELECT pg_sleep(600);", "pg_sleep()"),
            ("SELECT set_config('search_path', 'evil', false);", "set_config()"),
            ("SELECT public.lower('x');", "public.lower()"),
            ("SELECT id FROM orders WHERE dblink_exec('host=x', 'DROP TABLE t') = 'OK';", "dblink_exec()"),
        ],
    )
    def test_a_select_that_calls_a_function_is_high_risk_and_names_it(self, sql, called):
        assert called in high(lint(GUARD + sql), "function_call").message

    def test_call_runs_a_procedure_and_is_high_risk(self):
        assert "CALL archive_orders()" in high(lint(GUARD + "CALL archive_orders(2024);"), "function_call").message

    def test_a_user_function_inside_an_update_or_a_default_is_high_risk(self):
        update = lint(GUARD + "UPDATE orders SET total = recompute(id);")
        assert "recompute()" in high(update, "function_call").message and "data_rewrite" in rules(update)
        default = lint(GUARD + "ALTER TABLE orders ADD COLUMN ref text DEFAULT next_ref();")
        assert "next_ref()" in high(default, "function_call").message

    def test_built_in_value_functions_are_not_a_finding(self):
        report = lint(
            GUARD + "SELECT lower('A'), pg_catalog.upper('b'), count(*) FROM orders;\n"
            "ALTER TABLE orders ADD COLUMN created timestamptz DEFAULT now();"
        )
        assert report.findings == () and report.risk == "normal" and report.kind == "expand"

    def test_a_view_or_function_body_is_not_run_by_the_migration(self):
        report = lint(GUARD + "CREATE VIEW totals AS SELECT recompute(id) FROM orders;")
        assert report.findings == () and report.risk == "normal"

    def test_drop_schema_is_high_risk_and_listed_as_dropped(self):
        report = lint(GUARD + "DROP SCHEMA billing;")
        assert "removes whatever the schema holds" in high(report, "drop_schema").message
        assert report.drops == ("billing",)

    def test_cascade_is_high_risk_on_any_drop(self):
        assert "views, foreign keys" in high(lint(GUARD + "DROP TYPE money_cents CASCADE;"), "drop_cascade").message
        report = lint(GUARD + "ALTER TABLE orders DROP COLUMN note CASCADE;")
        assert {"drop_column", "drop_cascade"} <= rules(report) and report.risk == "high"
        both = lint(GUARD + "DROP SCHEMA billing CASCADE;")
        assert {"drop_schema", "drop_cascade"} <= rules(both)

    @pytest.mark.parametrize(
        "sql",
        [
            "GRANT ALL ON orders TO public;",
            "CREATE EXTENSION dblink;",
            "COPY orders FROM PROGRAM 'curl evil';",
            "LOCK TABLE orders;",
            "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f();",
            "EXPLAIN ANALYZE DELETE FROM orders;",
            "VACUUM FULL orders;",
        ],
    )
    def test_a_statement_the_lint_does_not_know_is_high_risk_never_silently_safe(self, sql):
        finding = high(lint(GUARD + sql), "unrecognised_statement")
        assert finding.statement == sql.rstrip(";") and "review it by hand" in finding.message

    def test_harmless_statements_are_recognised(self):
        report = lint(
            GUARD + "COMMENT ON TABLE orders IS 'one; DROP TABLE orders';\n"
            "CREATE SEQUENCE invoice_no;\nCREATE TYPE channel AS ENUM ('web', 'store');"
        )
        assert report.findings == () and report.risk == "normal"


class TestStatementsCannotHide:
    def test_semicolons_in_strings_and_comments_do_not_split_a_statement(self):
        report = lint(
            GUARD + "UPDATE orders SET note = 'x; DROP TABLE orders;' -- ; DROP TABLE carts;\n"
            "WHERE id = 1; /* DROP TABLE coupons; */"
        )
        assert rules(report) == {"data_rewrite"} and report.drops == ()

    def test_a_write_inside_a_select_is_a_data_rewrite(self):
        report = lint("WITH gone AS (DELETE FROM orders WHERE abandoned RETURNING id) SELECT count(*) FROM gone;")
        assert report.rewrites_data and "DELETE changes existing rows of orders" in only(report, "data_rewrite").message

    def test_insert_into_an_existing_table_adds_data_a_rollback_must_remove(self):
        report = lint("INSERT INTO coupons (code) VALUES ('WELCOME');")
        assert "INSERT adds rows to coupons" in only(report, "data_rewrite").message and report.rewrites_data
        fresh = lint("CREATE TABLE regions (code text);\nINSERT INTO regions VALUES ('eu');")
        assert fresh.findings == () and not fresh.rewrites_data

    def test_select_into_creates_a_table(self):
        report = lint("SELECT id, note INTO order_notes FROM orders;")
        assert report.adds == ("order_notes",) and report.findings == ()

    def test_statements_inside_create_schema_are_judged(self):
        report = lint(
            GUARD + "CREATE SCHEMA audit CREATE TABLE log (id bigint) CREATE TRIGGER t AFTER INSERT "
            "ON log FOR EACH ROW EXECUTE FUNCTION f();"
        )
        assert report.adds[:2] == ("audit", "log") and "unrecognised_statement" in rules(report)

    def test_an_ordinary_expand_migration_stays_normal_risk(self):
        report = lint(GUARD + "ALTER TABLE orders ADD COLUMN gift_note text;")
        assert report.risk == "normal" and report.as_input()["risk"] == "normal"
