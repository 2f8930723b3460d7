"""Where ``modelyard score`` PostgreSQL -> PostgreSQL spends its CPU: per stage, per thread, and the server's.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src python benchmarks/score_stages.py [--rows 1000000] [--repeat 2] [--reset]

Each round times in-process ``Model.predict`` on the frame in memory, then one ``score`` run with the
stages wrapped (thread CPU via ``time.thread_time``, wall via ``perf_counter``): the reader thread's
``Source.chunks``, the scoring threads' ``score_chunk`` / ``predict_partial`` / ``predict_frame``, the ONNX
call (run whole in the scoring thread, so its CPU is that thread's), the writer thread's
``ChunkWriter.write`` and ``pgbinary.encode``; and the CPU of each PostgreSQL backend of the database
(sampled from /proc, so PostgreSQL must run on this machine). The ceiling line is what the cores allow when
PostgreSQL shares them: the run's CPU (this process's and the backends') spread over every core is a time
the run cannot beat; so is the backends' and the scoring threads' CPU alone (a reader and a writer that
cost nothing). The database
``score_helper_bench`` is kept between invocations (loading 1M rows takes a while); ``--reset`` recreates it.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
import psutil  # noqa: E402
import psycopg  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=1_000_000)
ap.add_argument("--chunk-size", type=int, default=20000)
ap.add_argument("--repeat", type=int, default=2)
ap.add_argument("--reset", action="store_true")
args = ap.parse_args()
DB = "score_helper_bench"
ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
url = f"postgresql://postgres@127.0.0.1:5432/{DB}"
home = Path(tempfile.gettempdir()) / "modelyard_score_stages"
from tests.batchstream_helpers import houses_input, train_houses, write_table  # noqa: E402

import modelyard.batch.runner as runner_mod  # noqa: E402
import modelyard.batch.sink as sink_mod  # noqa: E402
import modelyard.runtime.fastpath as fp  # noqa: E402
from modelyard.batch import score  # noqa: E402
from modelyard.config import Settings  # noqa: E402
from modelyard.registry import Registry  # noqa: E402
from modelyard.runtime import Model  # noqa: E402

with psycopg.connect(ADMIN, autocommit=True) as c:
    exists = c.execute("select 1 from pg_database where datname=%s", (DB,)).fetchone()
    if exists and args.reset:
        c.execute(f'DROP DATABASE "{DB}" WITH (FORCE)')
        exists = None
    if not exists:
        c.execute(f'CREATE DATABASE "{DB}"')
settings = Settings(home=home, database_url=url)
marker = home / f"ready_{args.rows}"
frame = houses_input(args.rows, seed=99)
if not marker.exists():
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    bundle = train_houses(home, 5000, 100)
    Registry(settings).publish(bundle, alias="production")
    write_table(url, "bench_houses", frame)
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE bench_houses ADD PRIMARY KEY (id)")
    (home / "bundle_path").write_text(str(bundle))
    marker.write_text("")
bundle = Path((home / "bundle_path").read_text())
model = Model.load(bundle)
features = frame.drop(columns=["id"])
score("house-prices", source="SELECT * FROM bench_houses LIMIT 1000", target="warm", settings=settings, key="id")

stats = {}
lock = threading.Lock()


def add(name, cpu, wall):
    with lock:
        s = stats.setdefault(name, [0.0, 0.0, 0])
        s[0] += cpu
        s[1] += wall
        s[2] += 1


def timed(name, fn):
    def w(*a, **k):
        c, t = time.thread_time(), time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            add(name, time.thread_time() - c, time.perf_counter() - t)

    return w


# reader: wrap Source.chunks generator
orig_chunks = runner_mod.Source.chunks


def chunks(self, *a, **k):
    it = orig_chunks(self, *a, **k)
    while True:
        c, t = time.thread_time(), time.perf_counter()
        try:
            f = next(it)
        except StopIteration:
            return
        finally:
            add("read (reader thread)", time.thread_time() - c, time.perf_counter() - t)
        yield f


runner_mod.Source.chunks = chunks
runner_mod.score_chunk = timed("score_chunk (scoring threads)", runner_mod.score_chunk)

orig_pp = Model.predict_partial
Model.predict_partial = timed("  predict_partial", orig_pp)
orig_pf = Model.predict_frame
Model.predict_frame = timed("    predict_frame", orig_pf)
orig_sess_run = fp.OnnxRunner.run
fp.OnnxRunner.run = timed("      OnnxRunner.run (caller thread)", orig_sess_run)
sink_mod.ChunkWriter.write = timed("write (writer thread)", sink_mod.ChunkWriter.write)
import modelyard.batch.pgbinary as pgb  # noqa: E402

pgb.encode = timed("  pgbinary.encode", pgb.encode)

QUERIES = {}


def pg_cpu_sampler(stop, out):
    """CPU seconds (user + system) of each backend of the database, sampled until ``stop``: a backend that
    ends between two samples keeps its last figure."""
    with psycopg.connect(ADMIN, autocommit=True) as c:
        while not stop.is_set():
            rows = list(c.execute("select pid, left(query, 60) from pg_stat_activity where datname=%s", (DB,)))
            for pid, q in rows:
                if q and ("COPY" in q or "count" in q):
                    QUERIES.setdefault(pid, set()).add(q[:50])
                try:
                    times = psutil.Process(pid).cpu_times()
                except psutil.Error:
                    continue
                out[pid] = times.user + times.system
            stop.wait(0.1)


for i in range(args.repeat):
    t = time.perf_counter()
    cpu = time.process_time()
    model.predict(features)
    w = base_wall = time.perf_counter() - t
    print(
        f"round {i + 1}: in-process predict {args.rows / w:,.0f} rows/s wall {w:.2f}s cpu {time.process_time() - cpu:.2f}s"  # noqa: E501
    )
    stats.clear()
    stop = threading.Event()
    pgc = {}
    # baseline cpu of existing backends
    th = threading.Thread(target=pg_cpu_sampler, args=(stop, pgc))
    th.start()
    time.sleep(0.3)
    before = dict(pgc)
    t = time.perf_counter()
    cpu = time.process_time()
    r = score(
        "house-prices",
        source="SELECT * FROM bench_houses",
        target="bench_scores",
        settings=settings,
        key="id",
        chunk_size=args.chunk_size,
        run_id=f"prof-{time.time_ns()}",
    )
    w = time.perf_counter() - t
    pcpu = time.process_time() - cpu
    time.sleep(0.2)
    stop.set()
    th.join()
    pg = sum(v - before.get(p, 0) for p, v in pgc.items())
    print(
        f"   score {args.rows / w:,.0f} rows/s ratio {(args.rows / w) / (args.rows / base_wall):.2f} wall {w:.2f}s python cpu {pcpu:.2f}s postgres backends cpu {pg:.2f}s load {os.getloadavg()[0]:.1f}"  # noqa: E501
    )
    for p, v in pgc.items():
        if v - before.get(p, 0) > 0.05:
            print(f"       pg pid {p} cpu {v - before.get(p, 0):.2f}s {QUERIES.get(p)}")
    for k, (c_, wl, n) in stats.items():
        print(f"     {k:40s} cpu {c_:6.2f}s wall {wl:6.2f}s calls {n}")
    scoring = stats["score_chunk (scoring threads)"][0]
    cores = os.cpu_count() or 1
    bound, floor = (pg + pcpu) / cores, (pg + scoring) / cores
    print(f"   ceiling on {cores} cores: this run's CPU (Python {pcpu:.2f} + PostgreSQL {pg:.2f} CPU-s) needs at least "
          f"{bound:.2f} s: at most {base_wall / bound:.2f}x this round's in-process predict (the run took {w:.2f} s); "
          f"PostgreSQL and the scoring threads ({scoring:.2f} CPU-s) alone, with the reader and writer free: "
          f"{floor:.2f} s, {base_wall / floor:.2f}x")
with psycopg.connect(url, autocommit=True) as c:
    c.execute("drop table if exists bench_scores")
    c.execute("drop table if exists bench_scores_rejected")
