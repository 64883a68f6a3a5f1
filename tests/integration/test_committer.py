"""The committer's outbox: an outage is retried for as long as it lasts; any other error fails
the commit after MAX_UNEXPECTED_ATTEMPTS tries (a bug must not leave a run pending for ever)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from dispatcher.datasets.committer import MAX_UNEXPECTED_ATTEMPTS, Committer
from tracekit.errors import RetryableError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _queued_run(pg_url: str, org: str) -> uuid.UUID:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("INSERT INTO state.runs (org_id, kind, dag, dag_version, params, submitted_by,"
                           " state) VALUES (%s, 'backfill', 'backfill', 1, '{}', 't', 'succeeded')"
                           " RETURNING run_id",
                           (org,)).fetchone()
        assert row is not None
        conn.execute("INSERT INTO state.run_commits (run_id, org_id) VALUES (%s, %s)", (row[0], org))
        return uuid.UUID(str(row[0]))


def _state(pg_url: str, run_id: uuid.UUID) -> tuple[str, int, str]:
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE state.run_commits SET available_at = clock_timestamp() WHERE run_id = %s",
                     (run_id,))  # due again now: the test does not wait out the backoff
        row = conn.execute("SELECT state, attempts, last_error FROM state.run_commits WHERE run_id = %s",
                           (run_id,)).fetchone()
        assert row is not None
        return str(row[0]), int(row[1]), str(row[2])


@pytest.mark.parametrize(("error", "gives_up"), [(TypeError("a bug"), True),
                                                 (RetryableError("catalog unreachable"), False)])
def test_errors_that_are_no_outage_fail_the_commit_after_a_few_tries(
        pg_url: str, error: Exception, gives_up: bool) -> None:
    org = f"cm-{uuid.uuid4().hex[:8]}"
    run_id = _queued_run(pg_url, org)

    def broken() -> object:
        raise error

    committer = Committer(pg_url, org, broken)  # type: ignore[arg-type]
    for attempt in range(1, MAX_UNEXPECTED_ATTEMPTS + 2):
        assert committer.commit_one() == run_id, attempt
        state, attempts, last_error = _state(pg_url, run_id)
        assert attempts == attempt and type(error).__name__ in last_error
        if state == "failed":
            break
    assert (state == "failed") is gives_up
    if gives_up:
        assert attempts == MAX_UNEXPECTED_ATTEMPTS
        assert committer.commit_one() is None  # nothing due any more
