"""Make ``docs/stack-page.png``, the README's picture of the stack page, with a real headless browser.

    python docs/screenshot.py      # needs chromium, chromium-driver and selenium

The process it shows: 24 idle workers waiting on one queue, a log follower
stuck in its handler, and an asyncio loop in a thread with a task waiting on
a queue of its own.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import leakcheck

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(jobs: queue.Queue[object]) -> None:
    jobs.get()


def follow_logs(hung_up: threading.Event) -> None:
    hung_up.wait()


async def pump_events(events: asyncio.Queue[object]) -> None:
    await events.get()


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    jobs: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    for number in range(24):
        threading.Thread(target=worker, args=(jobs,), name=f"worker-{number}", daemon=True).start()
    threading.Thread(target=follow_logs, args=(stop,), name="log-follower", daemon=True).start()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="event-loop", daemon=True).start()
    pumping: list[asyncio.Task[None]] = []

    async def start_pump() -> None:
        pumping.append(asyncio.get_running_loop().create_task(pump_events(asyncio.Queue()), name="event-pump"))
        await asyncio.sleep(0)  # the task starts, and waits on its queue

    asyncio.run_coroutine_threadsafe(start_pump(), loop).result()
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(argument)
    with leakcheck.serve_stacks() as server:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(server.url)
            driver.save_screenshot(os.path.join(HERE, "stack-page.png"))
        finally:
            driver.quit()

    async def stop_pump() -> None:
        pumping[0].cancel()
        await asyncio.gather(*pumping, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(stop_pump(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    stop.set()
    print(os.path.join(HERE, "stack-page.png"))


if __name__ == "__main__":
    main()
