"""The stack page: what the stack endpoint answers a browser (``Accept: text/html``).

One self-contained HTML document, for reading during an incident: counts by
kind, identical stacks grouped (biggest group first), task await chains and
creation sites where known, and a filter box that keeps the groups whose
stacks contain its text, as ``?match=`` does.

- No external asset: the style and the script are inline, and the
  ``Content-Security-Policy`` allows exactly those two, by their hashes, and
  nothing else (no other script, style, image, frame, form or connection).
- Program text (names, files, functions, source lines) never becomes markup:
  the snapshot travels as JSON inside a ``<script type="application/json">``
  element, with ``<``, ``>`` and ``&`` escaped, and the script writes it into
  the page with ``textContent`` only.
- Nothing of a token reaches the page: a browser authenticates with HTTP
  Basic authentication (any user name, the token as password), which its
  address bar and referrers never show.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Dict, List

from ..kinds.base import live_block
from ..kinds.registry import kind
from ..reporting.dump import groups
from ..reporting.snapshot import Snapshot

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
h1 { font-size: 1.3em; margin: 0 0 .4em; }
#counts { margin: 0 0 1em; }
#counts span { margin-right: 1.2em; }
#filter { width: 30em; max-width: 90%; padding: .3em; font: inherit; }
.group { border: 1px solid #ccc; border-radius: 4px; margin: .8em 0; padding: .5em .8em; }
.group h2 { font-size: 1em; margin: 0 0 .3em; }
.members { color: #555; margin: 0 0 .3em; }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; font-size: 12.5px; }
.created { color: #555; }
.hidden { display: none; }
"""

_SCRIPT = """
"use strict";
const data = JSON.parse(document.getElementById("stacks").textContent);
const add = (parent, tag, text, cls) => {
  const element = document.createElement(tag);
  if (text !== undefined) element.textContent = text;
  if (cls) element.className = cls;
  parent.appendChild(element);
  return element;
};
add(document.getElementById("title"), "span", "pid " + data.pid);
const counts = document.getElementById("counts");
for (const count of data.counts) add(counts, "span", count, "count");
const list = document.getElementById("groups");
const shown = [];
for (const group of data.groups) {
  const box = add(list, "div", undefined, "group");
  box.dataset.size = String(group.members.length);
  add(box, "h2", group.title);
  add(box, "div", group.members.join(", "), "members");
  add(box, "pre", group.stack);
  if (group.created) add(box, "pre", group.created, "created");
  shown.push([box, group.search]);
}
const filter = document.getElementById("filter");
const summary = document.getElementById("summary");
const apply = () => {
  const keyword = filter.value;
  let count = 0;
  for (const [box, texts] of shown) {
    const match = keyword === "" || texts.some((text) => text.includes(keyword));
    box.classList.toggle("hidden", !match);
    if (match) count += 1;
  }
  summary.textContent = count + " of " + shown.length + " groups";
};
filter.addEventListener("input", apply);
apply();
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_hash(_STYLE)}; script-src {_hash(_SCRIPT)}; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Exactly the page's own inline style and script, by their hashes; nothing else loads or runs."""

HEADERS = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]


def _data(taken: Snapshot) -> Dict[str, Any]:
    counts: List[str] = []
    found: List[Dict[str, Any]] = []
    for name, records in taken.records:
        info_type = kind(name).info_type
        counts.append(f"{len(records)} {info_type.kind if len(records) == 1 else info_type.plural}")
        for members in groups(records):
            first = members[0]
            alike = "with this stack" if first.frames else "like this"
            title = first.header if len(members) == 1 else f"{len(members)} {first.plural} {alike}"
            found.append(
                {
                    "title": title,
                    "members": [info.name for info in members] if len(members) > 1 else [],
                    "stack": first.stack,
                    "created": first.created.text if first.created is not None else "",
                    "search": [live_block(info) for info in members],  # what ?match= looks at
                    "size": len(members),
                }
            )
    found.sort(key=lambda group: group["size"], reverse=True)  # biggest group first, of any kind
    return {"pid": taken.pid, "counts": counts, "groups": found}


def _json_in_html(value: Any) -> str:
    """JSON that cannot end the element it is in, nor start markup: ``<``, ``>`` and ``&`` as escapes."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(taken: Snapshot) -> str:
    """The stack page of ``taken``."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>leakcheck stacks</title>\n"
        f"<style>{_STYLE}</style>\n"
        "</head><body>\n"
        '<h1 id="title">leakcheck stacks: </h1>\n'
        '<p id="counts"></p>\n'
        '<p><input id="filter" type="search" placeholder="keep the stacks that contain..." autofocus> '
        '<span id="summary"></span></p>\n'
        '<div id="groups"></div>\n'
        f'<script id="stacks" type="application/json">{_json_in_html(_data(taken))}</script>\n'
        f"<script>{_SCRIPT}</script>\n"
        "</body></html>\n"
    )
