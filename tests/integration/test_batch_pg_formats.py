"""PostgreSQL's binary COPY on both sides of a batch run: the input's column types as the models saw them
before (read through ADBC), and every output type written in the binary format (``batch.pgbinary``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from modelyard.batch import BatchError, pgbinary
from modelyard.batch.source import Source
from modelyard.registry.userdb import user_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_url: str) -> Iterator[psycopg.Connection]:  # type: ignore[type-arg]
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        yield conn


def test_input_columns_arrive_as_int64_float64_bool_and_text(pg: psycopg.Connection, pg_url: str) -> None:  # type: ignore[type-arg]
    pg.execute("""CREATE TABLE typed (id int4, small int2, big int8, f4 float4, f8 float8, num numeric(10, 3),
                  flag bool, padded char(4), label text, day date, doc jsonb)""")
    pg.execute("""INSERT INTO typed VALUES
                  (2, 7, 9000000000, 1.1, 0.1, 12.345, true, 'ab', 'x', '2024-02-29', '{"a": 1}'),
                  (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL),
                  (3, -1, -2, 'NaN', 'Infinity', 'NaN', false, 'abcd', NULL, '1999-12-31', '[]')""")
    engine = user_engine(pg_url)
    chunks = list(Source.parse("SELECT * FROM typed").chunks(engine, 2, key="id"))
    assert [len(c) for c in chunks] == [2, 1]
    frame = pd.concat(chunks, ignore_index=True)
    assert frame["id"].tolist() == [1, 2, 3]  # ordered by the key, across chunks
    for name in ("id", "small", "big"):
        assert frame[name].dtype.kind in "if", name  # an int column with NULLs is float, as pandas has it
    assert frame["big"].tolist()[1:] == [9000000000, -2]
    assert frame["f4"].tolist()[1] == 1.1  # float4 as it prints (1.1), not its float8 widening
    assert frame["f8"].tolist()[1:] == [0.1, math.inf] and math.isnan(frame["f8"][0])
    assert frame["num"].dtype == np.float64 and frame["num"][1] == 12.345 and math.isnan(frame["num"][2])
    assert frame["flag"].tolist() == [None, True, False]
    assert frame["padded"].tolist()[1:] == ["ab  ", "abcd"]  # char(n) keeps its padding
    assert frame["label"].tolist()[:2] == ["", "x"] and pd.isna(frame["label"][2])  # '' is not NULL
    assert frame["day"].tolist()[1:] == ["2024-02-29", "1999-12-31"]  # other types as their text
    assert frame["doc"].tolist()[1:] == ['{"a": 1}', "[]"]
    skipped = list(Source.parse("typed").chunks(engine, 10, key="id", skip=2))
    assert [c["id"].tolist() for c in skipped] == [[3]]
    assert list(Source.parse("SELECT * FROM typed WHERE id < 0").chunks(engine, 10, key="id")) == []
    pg.execute("CREATE TABLE many AS SELECT g AS id FROM generate_series(1, 300000) AS g")
    with pytest.raises(BatchError, match=r"cannot read the input: .*division by zero"):  # part way through
        list(Source.parse("SELECT id, 1 / (id - 250000) AS x FROM many").chunks(engine, 50_000, key="id"))


def _oids(pg: psycopg.Connection, table: str) -> list[int]:  # type: ignore[type-arg]
    cur = pg.execute(f"SELECT * FROM {table} LIMIT 0")
    assert cur.description is not None
    return [d.type_code for d in cur.description]


def test_the_binary_writer_round_trips_every_output_type(pg: psycopg.Connection) -> None:  # type: ignore[type-arg]
    pg.execute("""CREATE TABLE out_types (run_id varchar(100), k int8, pred float8, flag bool, label text,
                  probs jsonb, version int4, at timestamptz, kept_int int8, kept_float float8, small int2,
                  doc json, naive timestamp, f4 float4)""")
    now = datetime(2026, 12, 2, 7, 57, 25, 426394, tzinfo=UTC)
    columns = [pa.scalar("run-é"), np.array([1, 2, -3, 2**62]), pa.array([1.5, np.nan, -0.0, 1e300]),
               np.array([True, False, True, False]), pa.array(["x", None, "", "ünï"]),
               pa.array(['{"a": 1.0}', None, "{}", "[1, 2]"]), pa.scalar(7, pa.int32()),
               pa.scalar(now, pa.timestamp("us", tz="UTC")), pa.array([1.0, None, 3.0, 4.0]),
               pa.array([None, 2.5, None, 1.0]), np.array([1, 2, 3, 4]), pa.scalar('{"b":2}'),
               pa.scalar(now.replace(tzinfo=None), pa.timestamp("us")), pa.array([0.5, 1.0, None, -2.0])]
    body = pgbinary.encode(list(zip(_oids(pg, "out_types"), columns, strict=True)), 4)
    assert body is not None
    with pg.cursor() as cur, cur.copy("COPY out_types FROM STDIN (FORMAT binary)") as copy:
        copy.write(body)
    rows = pg.execute("SELECT * FROM out_types").fetchall()
    assert [r[0] for r in rows] == ["run-é"] * 4
    assert [r[1] for r in rows] == [1, 2, -3, 2**62]
    assert rows[0][2] == 1.5 and math.isnan(rows[1][2]) and rows[3][2] == 1e300  # NaN stays a number
    assert [r[3] for r in rows] == [True, False, True, False]
    assert [r[4] for r in rows] == ["x", None, "", "ünï"]
    assert [r[5] for r in rows] == [{"a": 1.0}, None, {}, [1, 2]]
    assert {r[6] for r in rows} == {7} and {r[7] for r in rows} == {now}
    assert [r[8] for r in rows] == [1, None, 3, 4] and [r[9] for r in rows] == [None, 2.5, None, 1.0]
    assert [r[10] for r in rows] == [1, 2, 3, 4] and {r[12] for r in rows} == {now.replace(tzinfo=None)}
    assert [r[11] for r in rows] == [{"b": 2}] * 4 and [r[13] for r in rows] == [0.5, 1.0, None, -2.0]


def test_the_binary_writer_declines_what_it_cannot_write_exactly() -> None:
    assert pgbinary.encode([(20, pa.array(["a"]))], 1) is None  # text into int8: the text COPY's error
    assert pgbinary.encode([(20, np.array([1.5]))], 1) is None  # a fraction into int8
    assert pgbinary.encode([(1082, np.array([1]))], 1) is None  # a date column: not a type it writes
    assert pgbinary.encode([(23, np.array([2**40]))], 1) is None  # out of int4's range
    body = pgbinary.encode([(20, np.array([1, 2])), (701, pa.array([0.5, None]))], 2)
    assert body == (pgbinary.HEADER + b"\x00\x02" + b"\x00\x00\x00\x08" + (1).to_bytes(8, "big")
                    + b"\x00\x00\x00\x08" + np.array([0.5], ">f8").tobytes()
                    + b"\x00\x02" + b"\x00\x00\x00\x08" + (2).to_bytes(8, "big") + b"\xff\xff\xff\xff"
                    + pgbinary.TRAILER)
