-- Fair recovery: the queue position (queue_items.id) of the attempt a worker was given. When
-- that attempt is lost (its worker died, or the dispatch could not be delivered), the new
-- attempt is queued under this same position, so it is claimed before items enqueued after
-- it at the same priority instead of behind them. Retries after a failure queue normally.
ALTER TABLE tasks ADD COLUMN queue_order bigint;
