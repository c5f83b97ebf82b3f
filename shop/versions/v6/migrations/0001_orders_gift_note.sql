-- Expand: a nullable column; v1 code keeps working with it in place.
SET lock_timeout = '2s';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS gift_note text;
