"""One piece of work per endpoint, concurrently, each within its share of the run's time.

Each endpoint gets its share of what is left of -t: the time (less a margin
to report) divided by the number of waves (endpoints / --concurrency, rounded
up). One tarpitting endpoint then ends at its share, and the endpoints after
it still get theirs. The order of the results is the order of the endpoints.
"""

from __future__ import annotations

import math

from check_smtp_posture.deadline import Deadline

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing to run
if TYPE_CHECKING:
    from typing import Callable, Sequence, TypeVar

    Item = TypeVar("Item")
    Result = TypeVar("Result")

#: seconds kept back from the endpoints' shares for the run to report
REPORT_MARGIN = 0.1


def each_endpoint(endpoints: Sequence[Item], work: Callable[[Item, Deadline], Result],
                  deadline: Deadline, concurrency: int) -> list[Result]:
    """`work(endpoint, its_deadline)` for every endpoint; a single one gets the whole deadline."""
    if len(endpoints) == 1:
        return [work(endpoints[0], deadline)]
    from concurrent.futures import ThreadPoolExecutor  # paid only when needed

    waves = math.ceil(len(endpoints) / concurrency)
    share = max(0.0, deadline.remaining() - REPORT_MARGIN) / waves
    with ThreadPoolExecutor(max_workers=min(len(endpoints), concurrency)) as pool:
        return list(pool.map(lambda endpoint: work(endpoint, deadline.share(share)),
                             endpoints))
