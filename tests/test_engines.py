"""The real engines of tests/engines.py start and answer (Swift + s3api, PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from engines import s3_client


def test_swift_s3_stores_and_serves_ranges(s3_engine) -> None:
    c = s3_client(s3_engine.endpoint, s3_engine.access_key, s3_engine.secret_key)
    data = os.urandom(10_000)
    c.put_object(Bucket=s3_engine.bucket, Key="engine-check/a", Body=data)  # type: ignore[attr-defined]
    got = c.get_object(Bucket=s3_engine.bucket, Key="engine-check/a",  # type: ignore[attr-defined]
                       Range="bytes=100-199")["Body"].read()
    assert got == data[100:200]
    assert s3_engine.endpoint.startswith("http://127.0.0.1:")


def test_postgres_answers_select_1_and_runs_as_non_root(pg_engine) -> None:
    with psycopg.connect(pg_engine.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (41)")
        assert conn.execute("select x + 1 from t").fetchone() == (42,)
    assert pg_engine.dsn.startswith("postgresql://fsmount@127.0.0.1:")
    # PostgreSQL refuses root: the data directory belongs to the cluster's own user.
    assert Path(pg_engine.datadir).stat().st_uid != 0 or os.getuid() != 0
