"""The stack page: what the stack endpoint answers a browser (``Accept: text/html``).

These tests read the page as the server sends it: its headers, its inline
style and script against the Content-Security-Policy, and the snapshot it
carries.  (The page in a real browser is the next step of this issue.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.error
import urllib.request
from email.message import Message
from typing import Any, Dict, Mapping, Optional, Tuple

import helpers
import test_server

from leakcheck import StackServer, parse_dump, serve_stacks

server = test_server.server  # the fixtures: an endpoint, and threads parked until the test ends
parked = test_server.parked
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
TOKEN = "p4ge-t0ken-5e1f"


def fetch(url: str, headers: Optional[Mapping[str, str]] = None) -> Tuple[int, Message, str]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, answer.read().decode("utf-8")
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, refused.headers, refused.read().decode("utf-8")


def page_data(page: str) -> Dict[str, Any]:
    found = re.search(r'<script id="stacks" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None, page[:500]
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def inline(page: str, tag: str) -> str:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
    assert len(found) == 1, f"one inline <{tag}> expected, found {len(found)}"
    return found[0]  # type: ignore[no-any-return]


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_a_browser_gets_a_page_whose_policy_allows_only_its_own_style_and_script(server: StackServer) -> None:
    status, headers, page = fetch(server.url, BROWSER)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; ")
    assert f"style-src {sha256(inline(page, 'style'))};" in policy
    assert f"script-src {sha256(inline(page, 'script'))};" in policy
    assert "unsafe" not in policy and "frame-ancestors 'none'" in policy
    assert headers["Referrer-Policy"] == "no-referrer" and headers["X-Content-Type-Options"] == "nosniff"
    # No external asset of any kind.
    assert not re.search(r"\b(src|href)\s*=", page) and "http://" not in page and "https://" not in page


def test_other_clients_and_explicit_formats_keep_their_answers(server: StackServer) -> None:
    status, headers, text = fetch(server.url, {"Accept": "*/*"})
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert parse_dump(text).threads
    _, headers, _ = fetch(server.url + "?format=text", BROWSER)
    assert headers["Content-Type"].startswith("text/plain")
    _, headers, _ = fetch(server.url + "?format=json", BROWSER)
    assert headers["Content-Type"] == "application/json"
    _, headers, grouped = fetch(server.url + "?group=1", BROWSER)  # the dump's own option: the dump
    assert headers["Content-Type"].startswith("text/plain") and parse_dump(grouped).threads
    _, headers, _ = fetch(server.url + "?format=html", {"Accept": "*/*"})
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    status, _, body = fetch(server.url + "?format=html&group=1", BROWSER)
    assert status == 400 and "group= is for the text dump" in body


def test_the_page_counts_by_kind_and_shows_the_biggest_group_first(
    server: StackServer, parked: helpers.ParkedThreads
) -> None:
    gathered = helpers.Gathered(parked, 4, "page-worker")
    try:
        _, _, page = fetch(server.url, BROWSER)
    finally:
        gathered.release()
    data = page_data(page)
    threads = next(count for count in data["counts"] if "thread" in count)
    assert int(threads.split()[0]) >= 5
    first = data["groups"][0]
    assert first["size"] == 4 and first["title"] == "4 threads with this stack"
    assert sorted(first["members"]) == [f"page-worker-{n}" for n in range(4)]
    assert "in helpers.Gathered.work" in first["stack"]
    assert all(later["size"] <= first["size"] for later in data["groups"])


def test_match_narrows_the_page_as_it_narrows_the_dump(server: StackServer, parked: helpers.ParkedThreads) -> None:
    parked.start(name="page-follower")
    keyword = "page-" + "follower"
    _, _, page = fetch(f"{server.url}?format=html&match={keyword}")
    groups = page_data(page)["groups"]
    assert len(groups) == 1 and "page-follower" in groups[0]["title"]
    assert all(any(keyword in text for text in group["search"]) for group in groups)


HOSTILE = "</script><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"


def test_a_hostile_thread_name_stays_text(server: StackServer, parked: helpers.ParkedThreads) -> None:
    parked.start(name=HOSTILE)
    _, _, page = fetch(server.url, BROWSER)
    # The only markup is the page's own: the name is inside the JSON, with < > & escaped.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<img" not in page and "alert(1)</script>" not in page and "&amp;" not in page
    titles = [group["title"] for group in page_data(page)["groups"]]
    assert any(HOSTILE in title or repr(HOSTILE)[1:-1] in title for title in titles), titles


def test_with_a_token_a_browser_authenticates_with_the_token_as_password() -> None:
    with serve_stacks(token=TOKEN) as running:
        status, headers, body = fetch(running.url, BROWSER)
        assert status == 401
        challenges = headers.get_all("WWW-Authenticate") or []
        assert 'Basic realm="leakcheck", charset="UTF-8"' in challenges
        assert TOKEN not in body
        basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        status, _, page = fetch(running.url, {**BROWSER, "Authorization": basic})
        assert status == 200 and page_data(page)["groups"]
        assert TOKEN not in page
        wrong = "Basic " + base64.b64encode(b"anyone:not-the-token").decode()
        assert fetch(running.url, {**BROWSER, "Authorization": wrong})[0] == 401
        assert fetch(running.url, {**BROWSER, "Authorization": "Basic !!!not-base64"})[0] == 401
        status, _, _ = fetch(running.url + "?format=json", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
