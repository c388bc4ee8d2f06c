"""Week windows in Europe/London, across daylight saving changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml_lifecycle.exceptions import WindowError
from ml_lifecycle.windows import Window, merge_event_windows, resolve_window, week_start_before, window_ending

LONDON = "Europe/London"
UTC = dt.UTC


def london(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ZoneInfo(LONDON))


class TestWeekStartBefore:
    def test_monday_midnight_is_its_own_week_start(self) -> None:
        assert week_start_before(london(2011, 12, 5), LONDON) == london(2011, 12, 5)

    def test_friday_afternoon_goes_back_to_monday(self) -> None:
        assert week_start_before(london(2011, 12, 9, 12, 50), LONDON) == london(2011, 12, 5)

    def test_utc_instant_is_read_in_london(self) -> None:
        # 2011-07-03 23:30 UTC is already Monday 00:30 in London (BST).
        assert week_start_before(dt.datetime(2011, 7, 3, 23, 30, tzinfo=UTC), LONDON) == london(2011, 7, 4)

    def test_naive_datetime_is_taken_as_london_time(self) -> None:
        assert week_start_before(dt.datetime(2011, 3, 27, 1, 30), LONDON) == london(2011, 3, 21)


class TestWindowEnding:
    def test_one_week_of_the_last_complete_week(self) -> None:
        window = window_ending("2011-12-05", 1, LONDON)

        assert window.week_starts == [dt.date(2011, 11, 28)]
        assert window.local_start == dt.datetime(2011, 11, 28)
        assert window.local_end == dt.datetime(2011, 12, 5)

    def test_week_across_spring_change_is_167_hours(self) -> None:
        window = window_ending("2011-03-28", 1, LONDON)

        # Same-zone subtraction in Python ignores offsets, so compare in UTC.
        assert window.end.astimezone(UTC) - window.start.astimezone(UTC) == dt.timedelta(hours=167)
        assert window.local_end - window.local_start == dt.timedelta(days=7)

    def test_week_across_autumn_change_is_169_hours(self) -> None:
        window = window_ending("2011-10-31", 1, LONDON)

        assert window.end.astimezone(UTC) - window.start.astimezone(UTC) == dt.timedelta(hours=169)
        assert window.week_starts == [dt.date(2011, 10, 24)]

    def test_thirteen_weeks(self) -> None:
        window = window_ending("2011-10-31", 13, LONDON)

        assert window.weeks == 13
        assert window.week_starts[0] == dt.date(2011, 8, 1)
        assert window.week_starts[-1] == dt.date(2011, 10, 24)

    @pytest.mark.parametrize("weeks", [0, -1, 261])
    def test_invalid_week_count_rejected(self, weeks: int) -> None:
        with pytest.raises(WindowError, match=f"invalid number of weeks {weeks}"):
            window_ending("2011-10-31", weeks, LONDON)

    def test_invalid_date_named(self) -> None:
        with pytest.raises(WindowError, match="invalid date '31/10/2011'"):
            window_ending("31/10/2011", 1, LONDON)

    @given(
        st.datetimes(min_value=dt.datetime(2010, 1, 1), max_value=dt.datetime(2030, 1, 1)), st.integers(1, 60)
    )
    def test_bounds_are_monday_midnights(self, end: dt.datetime, weeks: int) -> None:
        window = window_ending(end, weeks, LONDON)

        assert window.local_start.weekday() == 0
        assert window.local_end.weekday() == 0
        assert window.local_start.time() == dt.time(0)
        assert window.local_end.time() == dt.time(0)
        assert window.weeks == weeks
        assert window.local_end <= end


class TestWindow:
    def test_end_before_start_rejected(self) -> None:
        with pytest.raises(WindowError, match="must be after its start"):
            Window(london(2011, 12, 5), london(2011, 11, 28), LONDON)

    def test_naive_bounds_rejected(self) -> None:
        with pytest.raises(WindowError, match="timezone-aware"):
            Window(dt.datetime(2011, 11, 28), dt.datetime(2011, 12, 5), LONDON)

    def test_extra_round_trips_through_merge(self) -> None:
        window = window_ending("2011-12-05", 2, LONDON)

        merged = merge_event_windows([window.to_extra()], LONDON)

        assert merged is not None
        assert (merged.start, merged.end) == (window.start, window.end)

    def test_sql_parameters_are_wall_clock(self) -> None:
        parameters = window_ending("2011-04-04", 1, LONDON).sql_parameters()

        assert parameters == {
            "window_start": "2011-03-28 00:00:00",
            "window_end": "2011-04-04 00:00:00",
            "first_week": "2011-03-28",
            "last_week": "2011-03-28",
        }


class TestResolveWindow:
    def test_parameters_win(self) -> None:
        window = resolve_window(
            timezone=LONDON,
            params={"window_end": "2011-10-31", "weeks": 13},
            event_extras=[window_ending("2011-12-05", 1, LONDON).to_extra()],
            logical_date=london(2011, 12, 5, 6),
        )

        assert window.weeks == 13
        assert window.source == "run parameters"

    def test_events_are_merged(self) -> None:
        extras = [
            window_ending("2011-11-28", 1, LONDON).to_extra(),
            {"unrelated": True},
            window_ending("2011-12-05", 1, LONDON).to_extra(),
        ]

        window = resolve_window(timezone=LONDON, event_extras=extras)

        assert window.week_starts == [dt.date(2011, 11, 21), dt.date(2011, 11, 28)]
        assert window.source == "asset events"

    def test_scheduled_run_counts_weeks_of_its_interval(self) -> None:
        end = london(2011, 12, 5, 6)

        window = resolve_window(
            timezone=LONDON, logical_date=end, data_interval=(end - dt.timedelta(weeks=2), end), params={}
        )

        assert window.week_starts == [dt.date(2011, 11, 21), dt.date(2011, 11, 28)]

    def test_scheduled_run_ends_at_interval_end(self) -> None:
        # An interval timetable's run has the interval start as its logical date.
        start = london(2011, 10, 31, 8)

        window = resolve_window(
            timezone=LONDON, logical_date=start, data_interval=(start, start + dt.timedelta(weeks=1))
        )

        assert window.week_starts == [dt.date(2011, 10, 31)]
        assert window.source == "data interval"

    def test_scheduled_run_keeps_requested_weeks(self) -> None:
        start = london(2011, 10, 31, 8)

        window = resolve_window(
            timezone=LONDON,
            params={"weeks": 13},
            logical_date=start,
            data_interval=(start, start + dt.timedelta(weeks=1)),
        )

        assert window.weeks == 13
        assert window.week_starts[-1] == dt.date(2011, 10, 31)

    def test_manual_run_interval_from_trigger_time_is_ignored(self) -> None:
        # Airflow 3 derives a manual run's interval from the trigger time.
        window = resolve_window(
            timezone=LONDON,
            logical_date=london(2011, 12, 5, 6),
            data_interval=(dt.datetime(2026, 11, 27, tzinfo=UTC), dt.datetime(2026, 12, 4, tzinfo=UTC)),
        )

        assert window.week_starts == [dt.date(2011, 11, 28)]

    def test_run_after_gives_the_last_complete_week(self) -> None:
        window = resolve_window(timezone=LONDON, run_after=london(2011, 12, 9, 15))

        assert window.week_starts == [dt.date(2011, 11, 28)]

    def test_nothing_to_resolve_from(self) -> None:
        with pytest.raises(WindowError, match="cannot resolve the run's window"):
            resolve_window(timezone=LONDON)

    @pytest.mark.parametrize("weeks", ["3", 2.5, True])
    def test_non_integer_weeks_rejected(self, weeks: object) -> None:
        with pytest.raises(WindowError, match="expected a whole number"):
            resolve_window(timezone=LONDON, params={"weeks": weeks}, run_after=london(2011, 12, 9))
