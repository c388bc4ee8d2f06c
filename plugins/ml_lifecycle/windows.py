"""Weekly data windows: which weeks of sales a DAG run works on.

A week runs from Monday 00:00 to the next Monday 00:00 in the schedule's time
zone. The sales data stores UK wall-clock times, so a week across a daylight
saving change is 167 or 169 hours long, and the bounds are computed on local
dates rather than by adding 168 hours.

How a run finds its window, first match wins:

1. ``window_end`` (and ``weeks``) given as run parameters, for ad-hoc re-runs.
2. The asset events that triggered the run: their windows are merged.
3. The logical date and data interval, for scheduled, backfill and manual
   runs with a logical date. A scheduled or backfill run of a timetable with
   an interval has the interval start as its logical date, so the window ends
   at the interval end: the run on Monday 8 August covers the week that closed
   that morning. A manual run's logical date is the end of its window. Airflow
   3 may derive a manual run's interval from the trigger time rather than
   from the logical date, so an interval that does not touch the logical date
   is ignored.
4. The time the run was queued for (``run_after``): the last complete week.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from ml_lifecycle.exceptions import WindowError

WEEK = dt.timedelta(days=7)
MAX_WINDOW_WEEKS = 260


@dataclass(frozen=True)
class Window:
    """A half-open range of whole weeks, ``[start, end)``, as aware datetimes in ``timezone``."""

    start: dt.datetime
    end: dt.datetime
    timezone: str
    source: str = "explicit"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise WindowError(f"window bounds must be timezone-aware, got {self.start!r} and {self.end!r}")
        if self.end <= self.start:
            raise WindowError(
                f"window end {self.end.isoformat()} must be after its start {self.start.isoformat()}"
            )

    @property
    def week_starts(self) -> list[dt.date]:
        """Return the Monday of every week in the window, oldest first."""
        first = self.start.astimezone(ZoneInfo(self.timezone)).date()
        last = self.end.astimezone(ZoneInfo(self.timezone)).date()
        return [first + dt.timedelta(days=7 * i) for i in range((last - first).days // 7)]

    @property
    def weeks(self) -> int:
        return len(self.week_starts)

    @property
    def local_start(self) -> dt.datetime:
        """Return the start as a naive wall-clock time, the form the sales data uses."""
        return self.start.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None)

    @property
    def local_end(self) -> dt.datetime:
        return self.end.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None)

    def to_extra(self) -> dict[str, Any]:
        """Serialize the window for an asset event's ``extra``."""
        return {
            "window_start": self.start.isoformat(),
            "window_end": self.end.isoformat(),
            "timezone": self.timezone,
        }

    def sql_parameters(self) -> dict[str, Any]:
        """Return the bind parameters that the SQL files use for the window."""
        return {
            "window_start": self.local_start.isoformat(sep=" "),
            "window_end": self.local_end.isoformat(sep=" "),
            "first_week": self.week_starts[0].isoformat(),
            "last_week": self.week_starts[-1].isoformat(),
        }

    def __str__(self) -> str:
        return (
            f"[{self.local_start:%Y-%m-%d}, {self.local_end:%Y-%m-%d}) {self.timezone} ({self.weeks} weeks)"
        )


def _as_aware(value: dt.datetime | str, timezone: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError as err:
            raise WindowError(
                f"invalid date {value!r}: expected ISO 8601, for example 2011-12-05 or 2011-12-05T00:00:00+00:00"
            ) from err
    else:
        parsed = value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed


def week_start_before(instant: dt.datetime | str, timezone: str) -> dt.datetime:
    """Return the latest Monday 00:00 (local) at or before ``instant``."""
    local = _as_aware(instant, timezone).astimezone(ZoneInfo(timezone))
    monday = local.date() - dt.timedelta(days=local.weekday())
    return dt.datetime.combine(monday, dt.time(), tzinfo=ZoneInfo(timezone))


def window_ending(end: dt.datetime | str, weeks: int, timezone: str, source: str = "explicit") -> Window:
    """Return the ``weeks`` whole weeks that end at the last Monday at or before ``end``."""
    if not 1 <= weeks <= MAX_WINDOW_WEEKS:
        raise WindowError(f"invalid number of weeks {weeks}: expected 1 to {MAX_WINDOW_WEEKS}")
    window_end = week_start_before(end, timezone)
    start_date = window_end.date() - dt.timedelta(days=7 * weeks)
    window_start = dt.datetime.combine(start_date, dt.time(), tzinfo=ZoneInfo(timezone))
    return Window(window_start, window_end, timezone, source)


def merge_event_windows(extras: Iterable[Mapping[str, Any]], timezone: str) -> Window | None:
    """Merge the windows carried by asset events into the smallest window that covers them all.

    Events without window keys are ignored; ``None`` means no event had one.
    """
    starts: list[dt.datetime] = []
    ends: list[dt.datetime] = []
    for extra in extras:
        if "window_start" in extra and "window_end" in extra:
            starts.append(week_start_before(extra["window_start"], timezone))
            ends.append(week_start_before(extra["window_end"], timezone))
    if not starts:
        return None
    return Window(min(starts), max(ends), timezone, source="asset events")


def resolve_window(
    *,
    timezone: str,
    params: Mapping[str, Any] | None = None,
    event_extras: Iterable[Mapping[str, Any]] = (),
    logical_date: dt.datetime | None = None,
    data_interval: tuple[dt.datetime, dt.datetime] | None = None,
    run_after: dt.datetime | None = None,
) -> Window:
    """Resolve a run's window from its parameters, triggering events and dates.

    :param params: run parameters; ``window_end`` (a date) and ``weeks`` (an int) are read.
    :param event_extras: ``extra`` of each asset event that triggered the run.
    :param logical_date: the run's logical date, ``None`` for asset-triggered runs.
    :param data_interval: the run's data interval. It gives the window end when
        it starts at the logical date (scheduled and backfill runs), and the
        number of weeks when it starts or ends there.
    :param run_after: when the run was queued for; the fallback for runs without a logical date.
    :raises WindowError: if nothing gives a window or a parameter is invalid.
    """
    params = params or {}
    requested_weeks = params.get("weeks")
    if requested_weeks is not None and (
        isinstance(requested_weeks, bool) or not isinstance(requested_weeks, int)
    ):
        raise WindowError(f"invalid weeks parameter {requested_weeks!r}: expected a whole number")

    if params.get("window_end"):
        return window_ending(params["window_end"], requested_weeks or 1, timezone, source="run parameters")

    from_events = merge_event_windows(event_extras, timezone)
    if from_events is not None:
        return from_events

    if logical_date is not None:
        end: dt.datetime = logical_date
        weeks = requested_weeks or 1
        if (
            data_interval is not None
            and logical_date in data_interval
            and data_interval[1] > data_interval[0]
        ):
            end = data_interval[1]
            if requested_weeks is None:
                # Seconds, because pendulum intervals cannot be divided by a timedelta.
                weeks = max(
                    1, round((data_interval[1] - data_interval[0]).total_seconds() / WEEK.total_seconds())
                )
        source = "logical date" if end == logical_date else "data interval"
        return window_ending(end, weeks, timezone, source=source)

    if run_after is not None:
        return window_ending(run_after, requested_weeks or 1, timezone, source="run_after")

    raise WindowError(
        "cannot resolve the run's window: it has no window_end parameter, no triggering asset event "
        "with a window, no logical date and no run_after"
    )
