"""Engine.ask from many threads and Engine.ask_async on one event loop: answers
stay right, the GIL is released while a question is answered, and the event
loop keeps running."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import CUSTOMER_COUNT, FakeOpenAI, Reply, ShopDb, sql_reply

import custard

SLOW = 0.5  # seconds the slow fake model waits before answering

COUNT_SQL = {
    "customers": "SELECT count(*) FROM customers",
    "products": "SELECT count(*) FROM products",
    "orders": "SELECT count(*) FROM orders",
}


def count_by_question(fake: FakeOpenAI, *, delay: float) -> None:
    """The fake model counts the table its question names."""

    def respond(body: dict[str, object]) -> Reply:
        messages = body.get("messages")
        assert isinstance(messages, list)
        question = str(messages[-1].get("content", ""))
        table = next((t for t in COUNT_SQL if t in question), None)
        if table is None:
            return Reply(text="-- cannot answer: unknown table")
        return Reply(text=sql_reply(COUNT_SQL[table]), delay=delay)

    fake.respond = respond


def slow_engine(shop: ShopDb, fake: FakeOpenAI) -> custard.Engine:
    count_by_question(fake, delay=SLOW)
    return custard.Engine(
        shop.url, model="fake-model", base_url=fake.base_url, api_key="test-key", timeout=20.0
    )


def test_eight_threads_share_one_offline_engine(shop: ShopDb) -> None:
    engine = custard.Engine(shop.url)
    questions = [f"how many {table} are there" for table in COUNT_SQL] * 8
    expected = {q: shop.count(q.split()[2]) for q in set(questions)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(engine.ask, questions))
    wrong = [(q, a.rows) for q, a in zip(questions, answers) if a.rows != [[expected[q]]]]
    assert not wrong, wrong


def test_eight_threads_ask_a_slow_model_at_once(sqlite_shop: ShopDb, fake_openai: FakeOpenAI) -> None:
    engine = slow_engine(sqlite_shop, fake_openai)
    tables = (list(COUNT_SQL) * 3)[:8]
    barrier = threading.Barrier(8)

    def ask(table: str) -> list[list[object]]:
        barrier.wait(timeout=30)
        return engine.ask(f"how many {table}").rows

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(ask, tables))
    assert rows == [[[sqlite_shop.count(t)]] for t in tables]
    assert len(fake_openai.recorded()) == 8
    # The model saw the questions waiting side by side, not one after another.
    assert fake_openai.peak_waiting >= 2, f"peak {fake_openai.peak_waiting}: not concurrent"


def test_the_gil_is_released_while_asking(sqlite_shop: ShopDb, fake_openai: FakeOpenAI) -> None:
    engine = slow_engine(sqlite_shop, fake_openai)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    try:
        time.sleep(0.05)
        before = ticks
        started = time.monotonic()
        answer = engine.ask("how many customers")
        elapsed = time.monotonic() - started
        during = ticks - before
    finally:
        stop.set()
        counter.join(timeout=5)
    assert answer.rows == [[CUSTOMER_COUNT]]
    assert elapsed >= SLOW
    # A pure-Python loop runs millions of times a second; holding the GIL
    # through the 0.5 s answer would leave it (and the fake server) stuck.
    assert during > 10_000, f"the counter thread ticked only {during} times in {elapsed:.2f} s"


def test_ask_async_runs_questions_concurrently_without_blocking_the_loop(
    sqlite_shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    engine = slow_engine(sqlite_shop, fake_openai)
    tables = (list(COUNT_SQL) * 3)[:8]

    async def main() -> tuple[list[custard.Answer], int, float]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        answers = await asyncio.gather(*(engine.ask_async(f"how many {t}") for t in tables))
        elapsed = time.monotonic() - started
        done.set()
        await ticking
        return list(answers), ticks, elapsed

    answers, ticks, elapsed = asyncio.run(main())
    assert [a.rows for a in answers] == [[[sqlite_shop.count(t)]] for t in tables]
    assert all(isinstance(a, custard.Answer) for a in answers)
    # The loop ran its ticker every 10 ms while the model took 0.5 s.
    assert ticks >= 10, f"the event loop ticked {ticks} times in {elapsed:.2f} s: it was blocked"
    # The model saw the questions waiting side by side, not one after another.
    assert fake_openai.peak_waiting >= 2, f"peak {fake_openai.peak_waiting}: not concurrent"


def test_ask_async_raises_the_same_errors(sqlite_shop: ShopDb) -> None:
    engine = custard.Engine(sqlite_shop.url)

    async def main() -> None:
        with pytest.raises(custard.InvalidInputError):
            await engine.ask_async("")
        with pytest.raises(custard.CannotAnswerError):
            await engine.ask_async("write me a poem about the weather")
        answer = await engine.ask_async("how many customers are there")
        assert answer.rows == [[CUSTOMER_COUNT]]

    asyncio.run(main())


def test_ask_async_can_be_cancelled_and_the_engine_still_works(
    sqlite_shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    engine = slow_engine(sqlite_shop, fake_openai)

    async def main() -> None:
        task = asyncio.ensure_future(engine.ask_async("how many customers"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        answer = await asyncio.wait_for(engine.ask_async("how many products"), timeout=30)
        assert answer.rows == [[sqlite_shop.count("products")]]

    asyncio.run(main())


def test_custard_engine_is_the_native_engine_with_ask_async() -> None:
    from custard import _custard

    assert issubclass(custard.Engine, _custard.Engine)
    assert inspect.iscoroutinefunction(custard.Engine.ask_async)


def test_ctrl_c_interrupts_a_blocking_ask_and_the_engine_still_works(
    sqlite_shop: ShopDb, fake_openai: FakeOpenAI
) -> None:
    import _thread

    count_by_question(fake_openai, delay=30.0)
    engine = custard.Engine(
        sqlite_shop.url, model="fake-model", base_url=fake_openai.base_url, api_key="test-key"
    )
    # Ctrl-C as Python sees it, once the question is waiting on the model.
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.ask("how many customers")
    finally:
        timer.cancel()
    # Raised while the model was still on it (its reply is 30 s away), not
    # after the answer came back.
    assert fake_openai.waiting == 1
    # The interrupted question was dropped; the next one is answered.
    count_by_question(fake_openai, delay=0.0)
    assert engine.ask("how many customers").rows == [[CUSTOMER_COUNT]]
