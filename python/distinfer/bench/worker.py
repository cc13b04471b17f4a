"""One load process: a headless Locust runner whose users stream requests and write raw records.

Run as `python -m distinfer.bench.worker PLAN.json` by `runner`. It loads Locust (which
monkey-patches the process for gevent, so it must come first), prints `ready`, reads the common
start time from stdin, and then:
- closed loop: `plan.users` Locust users, each sending its next request when the last one ends;
- open loop: one arrival user that sends at Poisson times drawn in advance from the seed, each
  request in its own greenlet, so when a request is sent never depends on how the server answers.
New requests stop at start + duration; requests in flight get `drain_timeout_s` to finish, then
are cancelled (and recorded as such). SIGTERM/SIGINT stop sending at once and drain the same way.

A closed-loop user whose request failed waits before its next one (exponential backoff with
jitter, at least the server's Retry-After), so a server that refuses or has gone away is not
flooded with requests that fail at once; a success resets the wait. If a record cannot be written
(disk full), the worker stops its load and exits with `WRITE_FAILED`: its runner then writes no
summary.

On a load host (results/loadgen.py), `python -m distinfer.bench.worker --master HOST:PORT --load-host
NAME --dir DIR --process K --processes N` is one of Locust's distributed workers instead: started by
its host's agent (bench/loadhost.py), it connects to the Locust master (bench/master.py), gets its
share of the scenario from it, lets Locust's dispatcher spawn its users, and starts at the master's
start message, on this host's own clock; its records go to DIR/records.jsonl, on this host.
"""

# isort: off
import locust  # noqa: F401  (first: gevent's monkey-patching must precede everything else)

# isort: on
import argparse
import contextlib
import ctypes
import dataclasses
import functools
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from gevent.pool import Pool
from geventhttpclient import HTTPClient
from locust import User, constant, task
from locust.env import Environment
from locust.exception import StopUser

from distinfer.bench.prompts import PromptSampler, load_prompts
from distinfer.bench.sessions import Conversation, plan_sessions
from distinfer.bench.stream import RequestSpec, StreamError, StreamResult, make_client, stream_request
from distinfer.bench.traces import Arrival, schedule
from distinfer.results.records import WRITE_FAILED, RecordWriter, RequestRecord, ServerTiming
from distinfer.results.scenario import WorkerPlan
from distinfer.results.workload import level_at

log = logging.getLogger("distinfer.bench.worker")

LAG_PROBE_S = 0.05  # how often the event loop is asked to wake; lateness beyond it is loop lag
# A closed-loop user's wait after a failed request: doubles from the first to the cap.
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 5.0
# A closed-loop user a step does not ask for looks again this often.
STEP_POLL_S = 0.1


@dataclasses.dataclass
class Outgoing:
    """A request of its own shape: a trace row's or a session turn's prompt, max_tokens and labels."""

    prompt: str
    max_tokens: int
    input_tokens: int
    messages: list[dict[str, str]] | None = None
    trace_index: int | None = None
    session: int | None = None
    turn: int | None = None


def _labels(out: Outgoing | None, max_tokens: int) -> dict[str, Any]:
    """The record fields a request of its own shape sets (the prompt set's requests: the spec's)."""
    if out is None:
        return {"max_tokens": max_tokens}
    return {
        "max_tokens": out.max_tokens,
        "trace_index": out.trace_index,
        "input_tokens_asked": out.input_tokens,
        "session": out.session,
        "turn": out.turn,
    }


class Backoff:
    """The wait before a user's next request after consecutive failures."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._failures = 0

    def success(self) -> None:
        self._failures = 0

    def failure(self, retry_after_s: float | None) -> float:
        base = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2**self._failures)
        self._failures += 1
        wait = base * self._rng.uniform(0.8, 1.2)  # spread users apart rather than retry in step
        return min(BACKOFF_CAP_S, max(wait, retry_after_s or 0.0))


class Load:
    """State shared by the users of this process."""

    def __init__(self, plan: WorkerPlan, api_key: str | None) -> None:
        sc = plan.scenario
        self.plan = plan
        self.load_host = plan.load_host
        self.started = Event()  # set once the start time is known (users wait for it)
        self.arrival_user_taken = False
        self.spec = RequestSpec.of(sc, api_key)
        self.prompts = PromptSampler([p.text for p in load_prompts(sc.prompts)], sc.seed, plan.index)
        # Arrival times have their own stream, so they do not depend on how many prompts were drawn.
        self.arrivals = random.Random(sc.seed * 1_000_003 + plan.index + 7_919)
        self.writer = RecordWriter(plan.records)
        self.start = 0.0
        self.load_end = 0.0
        self.stopping = False
        self.seq = 0
        self.run_tag = f"{int(time.time()):x}"  # keeps ids unique across runs sharing one server log
        self.in_flight = 0
        self.lags_ms: list[float] = []
        self.write_error: str | None = None
        self.env: Environment | None = None
        self.pool: Pool | None = None
        self._clients: dict[int, HTTPClient] = {}
        # A trace replay's rows and a session workload's conversations: this worker's share (every
        # workers-th), made before `ready` so no prompt is synthesised while the load runs.
        self.arrivals_due: list[Arrival] = []
        self.conversations: list[Conversation] = []
        if sc.trace is not None:
            rows = schedule(sc.trace, sc.duration_s, sc.seed)
            self.arrivals_due = rows[plan.index :: plan.workers]
        if sc.sessions is not None:
            self.conversations = plan_sessions(sc.sessions, sc.seed)[plan.index :: plan.workers]

    def request_id(self, seq: int) -> str:
        return f"{self.run_tag}-w{self.plan.index}-{seq}"

    def sending(self) -> bool:
        return not self.stopping and time.time() < self.load_end

    def active(self, local_user: int) -> bool:
        """Closed-loop steps: whether this worker's user `local_user` is one of the users the step in
        force asks for (users of all workers interleave as in the ramp, so the active ones stay spread)."""
        steps = self.plan.scenario.steps
        if steps is None:
            return True
        position = local_user * self.plan.workers + self.plan.index
        return position < level_at(steps, time.time() - self.start)

    def send(
        self, user: int, scheduled: float, out: Outgoing | None = None, result: StreamResult | None = None
    ) -> StreamError | None:
        """One request, start to end, and its record (cancellation too); returns its error, if any.
        `out`: a request of its own shape (a trace row, a session turn) instead of the prompt set's."""
        self.seq += 1
        seq = self.seq
        prompt = out.prompt if out is not None else self.prompts.next()
        body = None if out is None else self.spec.body(out.prompt, out.max_tokens, out.messages)
        result = result or StreamResult()
        error: StreamError | None = None
        sent_wall, sent_perf = time.time(), time.perf_counter()
        self.in_flight += 1
        try:
            stream_request(self.client(user), self.spec, prompt, result, self.request_id(seq), body)
        except StreamError as err:
            error = err
        except gevent.GreenletExit:
            error = StreamError("cancelled", "still in flight when the run stopped", result.status)
            raise
        except (TimeoutError, gevent.Timeout) as err:
            error = StreamError("timeout", f"no byte for {self.spec.timeout_s}s: {err}", result.status)
        except (ConnectionError, OSError) as err:
            kind = "connect" if result.status == 0 else "read"
            error = StreamError(kind, f"{type(err).__name__}: {err}", result.status)
        except Exception as err:  # a malformed stream must cost one record, never the worker
            error = StreamError("read", f"{type(err).__name__}: {err}", result.status)
        finally:
            self.in_flight -= 1
            end_perf = result.done_at or time.perf_counter()
            self._record(seq, user, scheduled, sent_wall, sent_perf, end_perf, result, error, out)
        return error

    def _record(
        self,
        seq: int,
        user: int,
        scheduled: float,
        sent_wall: float,
        sent_perf: float,
        end_perf: float,
        result: StreamResult,
        error: StreamError | None,
        out: Outgoing | None = None,
    ) -> None:
        def wall(perf: float | None) -> float | None:
            return None if perf is None else sent_wall + (perf - sent_perf)

        record = RequestRecord(
            request_id=self.request_id(seq),
            worker=self.plan.index,
            seq=seq,
            user=user,
            scheduled=scheduled,
            sent=sent_wall,
            first_byte=wall(result.first_byte),
            first_token=wall(result.first_token),
            last_token=wall(result.last_token),
            end=sent_wall + (end_perf - sent_perf),
            status=error.status if error else result.status,
            ok=error is None,
            error_kind=error.kind if error else None,  # type: ignore[arg-type]
            error=str(error)[:300] if error else None,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            chunks=result.chunks,
            gaps_ms=result.gaps_ms,
            server=_server_timing(result.server_timing),
            load_host=self.load_host,
            **_labels(out, self.spec.max_tokens),
        )
        self._write(record)
        if self.env is not None:  # Locust's own stats see every request too (never used for metrics)
            self.env.events.request.fire(
                request_type="POST",
                name=self.spec.path,
                response_time=(end_perf - sent_perf) * 1000.0,
                response_length=result.chunks,
                exception=error,
                context={},
            )

    def _write(self, record: RequestRecord) -> None:
        """Append a record; on failure stop the load (a hole in the records would go unnoticed)."""
        if self.write_error is not None:
            return
        try:
            self.writer.write(record)
        except OSError as err:
            self.write_error = f"cannot write {self.writer.path}: {err}"
            self.stopping = True

    def client(self, user: int) -> HTTPClient:
        """Closed loop: one keep-alive connection per user. Open loop: one pool of `users` connections."""
        key = user if user >= 0 else -1
        client = self._clients.get(key)
        if client is None:
            client = make_client(self.spec, 1 if user >= 0 else self.plan.users)
            self._clients[key] = client
        return client

    def overflow(self, scheduled: float, out: Outgoing | None = None) -> None:
        self.seq += 1
        now = time.time()
        self._write(
            RequestRecord(
                request_id=self.request_id(self.seq),
                worker=self.plan.index,
                seq=self.seq,
                user=-1,
                scheduled=scheduled,
                sent=now,
                end=now,
                ok=False,
                error_kind="client_overflow",
                error=f"{self.plan.users} requests already in flight (the --users cap of this worker)",
                load_host=self.load_host,
                **_labels(out, self.spec.max_tokens),
            )
        )

    def watch_loop_lag(self) -> None:
        while True:
            before = time.perf_counter()
            gevent.sleep(LAG_PROBE_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - before - LAG_PROBE_S) * 1000.0))


def _server_timing(data: dict[str, Any] | None) -> ServerTiming | None:
    """The server's timing of the request, joined to its record; a server that sends another shape is
    recorded without one (its legs cannot be split) rather than failing the request."""
    if data is None:
        return None
    try:
        return ServerTiming.model_validate(data)
    except ValueError:
        return None


LOAD: Load  # set in main(); Locust instantiates user classes itself


class ClosedLoopUser(User):
    """The guide's user: sends its next request as soon as the last one ends."""

    wait_time = constant(0)
    _next_index = 0

    def on_start(self) -> None:
        self.index = ClosedLoopUser._next_index
        ClosedLoopUser._next_index += 1
        LOAD.started.wait()
        positions = LOAD.plan.positions
        # Load hosts: a user Locust deals beyond this worker's places is not run, so the scenario keeps
        # the users it started with (Locust re-deals a worker's users when it quits after its load, and
        # a lost host's after a minute).
        self.extra = positions is not None and self.index >= len(positions)
        self.backoff = Backoff(random.Random(LOAD.plan.scenario.seed * 7_919 + self.index))
        # Locust starts every user at once; each waits for its place in the ramp instead, or all
        # would ask at the same instant (and, with equal answers, keep doing so every round).
        gevent.sleep(max(0.0, LOAD.start + LOAD.plan.start_offset(self.index) - time.time()))

    @task
    def one_request(self) -> None:
        if self.extra or not LOAD.sending():
            raise StopUser()
        if not LOAD.active(self.index):  # not asked for by the step in force: wait for one that does
            gevent.sleep(STEP_POLL_S)
            return
        error = LOAD.send(self.index, time.time())
        if error is None:
            self.backoff.success()
            return
        wait = self.backoff.failure(error.retry_after_s)
        while wait > 0 and LOAD.sending():  # cut short when the load ends
            step = min(wait, 0.2)
            gevent.sleep(step)
            wait -= step


Dispatch = tuple[float, "Outgoing | None", Callable[[], object]]  # due, what it sends, how


def dispatch(arrivals: Iterable[Dispatch]) -> Pool:
    """Start each arrival at its due time in a greenlet of its own, so when one starts never depends on
    how the server answers; past the in-flight cap (`users`), an arrival is recorded as dropped."""
    pool = LOAD.pool = Pool(LOAD.plan.users)
    for due, out, run in arrivals:
        if due >= LOAD.load_end or LOAD.stopping:
            break
        gevent.sleep(max(0.0, due - time.time()))
        if LOAD.stopping:
            break
        if pool.full():
            LOAD.overflow(due, out)
        else:
            pool.spawn(run)
    return pool


def arrival_user() -> None:
    """An arrival user's start: wait for the start time; only one per worker sends (on a load host,
    Locust might deal a worker more than one)."""
    LOAD.started.wait()
    if LOAD.arrival_user_taken:
        raise StopUser()
    LOAD.arrival_user_taken = True


def drain(pool: Pool) -> None:
    pool.join(timeout=0 if LOAD.stopping else LOAD.plan.scenario.drain_timeout_s)
    raise StopUser()


class OpenLoopUser(User):
    """Sends at Poisson arrival times fixed in advance; never waits for an answer before the next."""

    wait_time = constant(0)

    @task
    def arrivals(self) -> None:
        arrival_user()
        steps = LOAD.plan.scenario.steps
        workers = LOAD.plan.workers
        # Steps: a Poisson process whose rate changes, by thinning one at the peak rate (each arrival
        # kept with probability rate now / peak): exact for steps and ramps alike.
        peak = (LOAD.plan.scenario.peak_rate or 0.0) / workers if steps else LOAD.plan.rate or 1.0

        def poisson() -> Iterator[Dispatch]:
            due = LOAD.start
            while peak > 0 and due < LOAD.load_end:
                due += LOAD.arrivals.expovariate(peak)
                if steps and LOAD.arrivals.random() * peak >= level_at(steps, due - LOAD.start) / workers:
                    continue
                yield due, None, functools.partial(LOAD.send, -1, due)

        drain(dispatch(poisson()))


class TraceUser(User):
    """Sends a trace's rows at their own times (scaled): open loop, as the Poisson arrivals."""

    wait_time = constant(0)

    @task
    def arrivals(self) -> None:
        arrival_user()

        def rows() -> Iterator[Dispatch]:
            for row in LOAD.arrivals_due:
                due = LOAD.start + row.due_s
                out = Outgoing(row.prompt, row.output_tokens, row.input_tokens, trace_index=row.index)
                yield due, out, functools.partial(LOAD.send, -1, due, out)

        drain(dispatch(rows()))


def converse(conversation: Conversation) -> None:
    """One conversation: each turn sends every earlier message and answer with its new one, then the
    user thinks. A turn that fails ends the conversation (its history would be wrong)."""
    history: list[dict[str, str]] = []
    due = LOAD.start + conversation.start_s
    for number, turn in enumerate(conversation.turns, start=1):
        gevent.sleep(max(0.0, due - time.time()))
        if not LOAD.sending():
            return
        messages = [*history, {"role": "user", "content": turn.prompt}]
        out = Outgoing(
            turn.prompt, turn.output_tokens, turn.input_tokens, messages, None, conversation.index, number
        )
        result = StreamResult(text=[])
        if LOAD.send(-1, due, out, result) is not None:
            return
        history = [*messages, {"role": "assistant", "content": "".join(result.text or [])}]
        due = time.time() + turn.think_s


class SessionUser(User):
    """Starts each conversation at its time; `users` caps the conversations under way."""

    wait_time = constant(0)

    @task
    def conversations(self) -> None:
        arrival_user()

        def starts() -> Iterator[Dispatch]:
            for conversation in LOAD.conversations:
                first = conversation.turns[0]
                out = Outgoing(
                    first.prompt, first.output_tokens, first.input_tokens, session=conversation.index, turn=1
                )
                yield LOAD.start + conversation.start_s, out, functools.partial(converse, conversation)

        pool = dispatch(starts())
        # Conversations under way at the load's end stop before their next turn; then the drain.
        while pool.free_count() < pool.size and not LOAD.stopping and time.time() < LOAD.load_end:
            gevent.sleep(0.1)
        drain(pool)


def user_class_for(sc: Any) -> type[User]:
    """The user class a scenario runs (a ScenarioSpec; the master names it to Locust's dispatcher)."""
    if sc.trace is not None:
        return TraceUser
    if sc.sessions is not None:
        return SessionUser
    return OpenLoopUser if sc.open_loop else ClosedLoopUser


def _die_with_parent() -> None:
    """If the runner is SIGKILLed, its workers get SIGTERM instead of loading the server unattended."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run(plan: WorkerPlan) -> None:
    global LOAD
    LOAD = Load(plan, os.environ.get("DISTINFER_BENCH_API_KEY") or None)
    user_class = user_class_for(plan.scenario)
    env = Environment(user_classes=[user_class], host=plan.scenario.url)
    LOAD.env = env
    runner = env.create_local_runner()

    def stop(signum: int, _frame: object) -> None:
        LOAD.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    line = sys.stdin.readline().strip()
    if not line:
        return  # the runner went away before starting
    LOAD.start = float(line)
    LOAD.load_end = LOAD.start + plan.scenario.duration_s
    LOAD.started.set()
    gevent.sleep(max(0.0, LOAD.start - time.time()))
    lag = gevent.spawn(LOAD.watch_loop_lag)
    users = 1 if plan.scenario.open_loop else plan.users
    runner.start(users, spawn_rate=max(users, 1))
    _wait_until_done(runner, plan)
    runner.quit()
    if LOAD.pool is not None:  # open loop: requests still running past the drain are cancelled here
        LOAD.pool.kill(block=True, timeout=10)
    lag.kill()
    LOAD.writer.close()
    if LOAD.write_error is not None:
        print(f"load worker {plan.index}: {LOAD.write_error}; stopping", file=sys.stderr, flush=True)
        sys.exit(WRITE_FAILED)
    _write_stats(plan, runner)


def _wait_until_done(runner, plan: WorkerPlan) -> None:  # type: ignore[no-untyped-def]
    """Until every user has stopped by itself, or the drain deadline (then in-flight are cancelled)."""
    while time.time() < LOAD.load_end and not LOAD.stopping:
        gevent.sleep(0.2)
    deadline = time.time() + plan.scenario.drain_timeout_s + 1.0
    while time.time() < deadline and not LOAD.stopping and (runner.user_count > 0 or LOAD.in_flight > 0):
        gevent.sleep(0.1)


def _write_stats(plan: WorkerPlan, runner) -> None:  # type: ignore[no-untyped-def]
    total = runner.stats.total
    stats = {
        "worker": plan.index,
        "pid": os.getpid(),
        "start": LOAD.start,
        "load_host": plan.load_host,
        "loop_lag_ms": LOAD.lags_ms,
        "locust": {"requests": total.num_requests, "failures": total.num_failures},
    }
    Path(plan.stats).write_text(json.dumps(stats))


PLAN_TIMEOUT_S = 300.0  # from connecting to the master to getting a share of the scenario
START_TIMEOUT_S = 300.0  # from ready to the start message


def run_distributed(master: str, host: str, folder: Path, process: int, processes: int) -> None:
    """One Locust worker of a load host: its share, users and start come from the master."""
    global LOAD
    address, _, port = master.rpartition(":")
    env = Environment(user_classes=[ClosedLoopUser, OpenLoopUser, TraceUser, SessionUser])
    runner = env.create_worker_runner(address, int(port))  # returns once the master acknowledged it
    got_plan: AsyncResult = AsyncResult()
    got_start: AsyncResult = AsyncResult()
    runner.register_message("distinfer_plan", lambda environment, msg, **_: got_plan.set(msg.data))
    runner.register_message("distinfer_start", lambda environment, msg, **_: got_start.set(msg.data))

    def report(client_id: str, data: dict[str, Any], **_: Any) -> None:
        if "LOAD" in globals():
            data["distinfer"] = {"requests": LOAD.seq, "in_flight": LOAD.in_flight}

    env.events.report_to_master.add_listener(report)
    hello = {
        "host": host,
        "process": process,
        "processes": processes,
        "pid": os.getpid(),
        "records": str(folder / "records.jsonl"),
        "stats": str(folder / f"worker-{process}.json"),
    }
    runner.send_message("distinfer_hello", hello)
    plan = WorkerPlan.model_validate(got_plan.get(timeout=PLAN_TIMEOUT_S))
    LOAD = Load(plan, os.environ.get("DISTINFER_BENCH_API_KEY") or None)
    LOAD.env = env

    def stop(signum: int, _frame: object) -> None:
        LOAD.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.send_message("distinfer_ready", {"process": process})
    start = got_start.get(timeout=START_TIMEOUT_S)
    plan.positions = list(start["positions"]) if start["positions"] else None
    LOAD.start = time.time() + float(start["delay_s"])  # this host's clock: no clock sync needed
    LOAD.load_end = LOAD.start + plan.scenario.duration_s
    LOAD.started.set()
    gevent.sleep(max(0.0, LOAD.start - time.time()))
    lag = gevent.spawn(LOAD.watch_loop_lag)
    _wait_until_done(runner, plan)
    if LOAD.pool is not None:
        LOAD.pool.kill(block=True, timeout=10)
    lag.kill()
    LOAD.writer.close()
    _write_stats(plan, runner)
    runner.send_message("distinfer_done", {"requests": LOAD.seq, "write_error": LOAD.write_error})
    env.events.quitting.fire(environment=env, reverse=True)  # Locust's own `quit` to the master
    gevent.sleep(0.2)
    if LOAD.write_error is not None:
        print(f"load worker {plan.index}: {LOAD.write_error}; stopping", file=sys.stderr, flush=True)
        sys.exit(WRITE_FAILED)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if len(sys.argv) > 1 and sys.argv[1] == "--master":
        parser = argparse.ArgumentParser(prog="python -m distinfer.bench.worker")
        parser.add_argument("--master", required=True, help="HOST:PORT of the Locust master")
        parser.add_argument("--load-host", required=True)
        parser.add_argument("--dir", required=True, type=Path)
        parser.add_argument("--process", required=True, type=int)
        parser.add_argument("--processes", required=True, type=int)
        args = parser.parse_args()
        _die_with_parent()
        run_distributed(args.master, args.load_host, args.dir, args.process, args.processes)
        return
    _die_with_parent()
    plan = WorkerPlan.model_validate_json(Path(sys.argv[1]).read_text())
    run(plan)


if __name__ == "__main__":
    main()
