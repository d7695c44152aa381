"""Statistics for the engine's tables when they have outgrown theirs.

A table that was never analyzed has no statistics until autovacuum next visits its
database: up to ``autovacuum_naptime`` (a minute by default) after its first rows. Until
then the generic plans of the engine's hot statements, made while it was empty, stay in
use; PostgreSQL re-plans them only when a table they read is analyzed. That is the case on
a fresh install and, every day, for the new day partitions of runs, tasks and events
(migration 0016). Every few seconds this loop analyzes the tables that hold at least
:data:`ANALYZE_FROM_ROWS` rows and :data:`GROWTH` times as many as their statistics describe
(migration 0023). A table that only churns (the queue) or grows by the 10 % that starts
autovacuum's own ANALYZE is autovacuum's, as before, so the loop's steady cost is one read
of ``pg_stat_user_tables`` per pass.

Every replica runs it. Two replicas that find the same table may both analyze it (harmless;
a table being analyzed is skipped, not waited for).
"""

from __future__ import annotations

import logging

from hewer.engine.db.repository import Repository
from hewer.engine.services.loops import DeadlineLoop

log = logging.getLogger(__name__)
ANALYZE_FROM_ROWS = 1000
GROWTH = 4.0
PASS_SECONDS = 5.0


class TableStatistics(DeadlineLoop):
    def __init__(self, *, repo: Repository) -> None:
        super().__init__(name="table-statistics", max_sleep=PASS_SECONDS)
        self._repo = repo

    async def run_once(self) -> None:
        analyzed = await self._repo.analyze_grown_tables(min_rows=ANALYZE_FROM_ROWS, growth=GROWTH)
        if analyzed:
            log.info("analyzed tables that outgrew their statistics: %s", ", ".join(analyzed))
