-- Expand with a backfill: a new column, filled from every existing order (this rewrites data, so a failed
-- release needs the data put back, not only the traffic).
SET lock_timeout = '2s';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS amount_minor_units bigint;
UPDATE orders SET amount_minor_units = amount_cents;
