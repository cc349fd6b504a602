"""Concurrent work of one run: the family's one thread pool, bounded and in order.

`each` runs one piece of work per item, at most `concurrency` at once; the
order of the results is the order of the items, and the first exception a
piece of work raises is raised here. Every piece of work of the family is
bounded by the run's deadline, so waiting for them is bounded too; a pool is
never waited on for a straggler once every result is in.

`each_endpoint` gives each endpoint its share of what is left of -t: the time
(less a margin to report) divided by the number of waves (endpoints /
--concurrency, rounded up). One tarpitting endpoint then ends at its share,
and the endpoints after it still get theirs.
"""

from __future__ import annotations

import math

from check_smtp_posture.deadline import Deadline

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing to run
if TYPE_CHECKING:
    from typing import Callable, Mapping, Sequence, TypeVar

    Item = TypeVar("Item")
    Result = TypeVar("Result")

#: seconds kept back from the endpoints' shares for the run to report
REPORT_MARGIN = 0.1


def each(items: Sequence[Item], work: Callable[[Item], Result], concurrency: int
         ) -> list[Result]:
    """`work(item)` for every item, at most `concurrency` at once; one item runs here."""
    if len(items) <= 1:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor  # paid only when needed

    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items))))
    try:
        return list(pool.map(work, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def all_at_once(jobs: Mapping[str, Callable[[], Result]], concurrency: int | None = None
                ) -> dict[str, Result]:
    """name -> job() for every job, all of them at once (or `concurrency` at a time)."""
    results = each(list(jobs.values()), lambda job: job(), concurrency or len(jobs))
    return dict(zip(jobs, results))


def each_endpoint(endpoints: Sequence[Item], work: Callable[[Item, Deadline], Result],
                  deadline: Deadline, concurrency: int) -> list[Result]:
    """`work(endpoint, its_deadline)` for every endpoint; a single one gets the whole deadline."""
    if len(endpoints) == 1:
        return [work(endpoints[0], deadline)]
    waves = math.ceil(len(endpoints) / concurrency)
    share = max(0.0, deadline.remaining() - REPORT_MARGIN) / waves
    return each(endpoints, lambda endpoint: work(endpoint, deadline.share(share)), concurrency)
