#!/usr/bin/env python3
"""The knowledge service's NATS subjects, seen from another language's client (nats-py).

    python3 tests/python/test_knowledge_nats.py NATS_URL

A knowledge service must answer on NATS_URL (the Rust test serves one over a test double).
Checks the JSON contract documented in services/knowledge/src/nats.rs and
docs/ARCHITECTURE.md: every reply is JSON with "v": 1, results sit under one named key
("hits", "report", "id", "deleted", "stats", "context"), failures are
{"error": {"code", "message"}} replies, never silence, and the service keeps serving after
them. Run by the Rust test `a_python_nats_client_gets_the_documented_json_contract`
(services/knowledge/tests/api.rs); exits non-zero on the first broken expectation.
"""

import asyncio
import json
import sys
import time

import nats
from nats.errors import NoRespondersError

SEARCH = "turbo.knowledge.search"
INDEX = "turbo.knowledge.index"
ADD = "turbo.knowledge.add"
DELETE = "turbo.knowledge.delete"
STATS = "turbo.knowledge.stats"
CONTEXT = "turbo.knowledge.context"

# Upper bound for one reply, so a broken server fails the script instead of hanging it.
PATIENCE = 30.0
HIT_KEYS = {
    "id", "project_id", "path", "start_line", "end_line", "language", "chunk_type", "symbol",
    "content", "score", "usage_count", "success_rate",
}
REPORT_KEYS = {
    "files_seen", "files_changed", "files_removed", "files_skipped", "chunks_added",
    "chunks_removed", "chunks_embedded", "version", "duration_ms",
}
STATS_KEYS = {"chunks", "files", "projects", "embedding_model", "dimension", "version", "ann_index"}
CONTEXT_KEYS = {"text", "chunk_ids", "sources", "excerpts"}
ERROR_CODES = {"invalid_argument", "failed_precondition", "not_found", "unavailable", "internal"}


class ContractBroken(Exception):
    pass


def check(condition, what, reply=None):
    if not condition:
        raise ContractBroken(what + ("" if reply is None else f": {json.dumps(reply)}"))


async def request(nc, subject, body):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(subject, payload, timeout=PATIENCE)
    try:
        reply = json.loads(msg.data)
    except ValueError as e:
        raise ContractBroken(f"{subject}: the reply is not JSON ({e}): {msg.data!r}")
    check(isinstance(reply, dict) and reply.get("v") == 1, f'{subject}: the reply has no "v": 1', reply)
    return reply


async def ok(nc, subject, body, key):
    reply = await request(nc, subject, body)
    check("error" not in reply, f"{subject} {body!r} failed", reply)
    check(set(reply) == {"v", key}, f'{subject}: the reply is exactly "v" and "{key}"', reply)
    return reply[key]


async def refused(nc, subject, body, code="invalid_argument"):
    reply = await request(nc, subject, body)
    error = reply.get("error")
    check(isinstance(error, dict), f"{subject} {body!r}: expected an error reply", reply)
    check(error.get("code") == code, f"{subject} {body!r}: expected code {code}", reply)
    check(error["code"] in ERROR_CODES, f"{subject}: the code is one of {sorted(ERROR_CODES)}", reply)
    check(isinstance(error.get("message"), str) and error["message"], f"{subject}: the error has no message", reply)
    return error["message"]


async def main(url):
    nc = await nats.connect(url, connect_timeout=PATIENCE, max_reconnect_attempts=0)
    passed = 0
    try:
        # The service may still be subscribing.
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                await request(nc, STATS, b"")
                break
            except NoRespondersError:
                check(time.monotonic() < deadline, f"no knowledge service answers on {STATS}")
                await asyncio.sleep(0.05)

        hits = await ok(nc, SEARCH, {
            "query": "where is the config loaded",
            "limit": 5,
            "filter": {"languages": ["rust"]},
            "mode": "hybrid",
        }, "hits")
        check(isinstance(hits, list) and hits, "search answers hits", hits)
        for hit in hits:
            check(set(hit) == HIT_KEYS, f"a hit has exactly {sorted(HIT_KEYS)}", hit)
            check(isinstance(hit["score"], (int, float)), "a hit has a numeric score", hit)
        passed += 1

        report = await ok(nc, INDEX, {"project_id": "p1", "workspace": "/srv/workspaces/p1"}, "report")
        check(set(report) == REPORT_KEYS, f"an index report has exactly {sorted(REPORT_KEYS)}", report)
        for skipped in report["files_skipped"]:
            check(set(skipped) == {"path", "reason"}, "a skipped file has its path and reason", skipped)
        passed += 1

        chunk = {
            "id": "py-1",
            "title": "Retry with backoff",
            "content": "Retry transient errors with jittered backoff.",
            "chunk_type": "pattern",
            "category": "resilience",
            "source": "python contract test",
            "usage_count": 0,
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
        }
        chunk_id = await ok(nc, ADD, chunk, "id")
        check(isinstance(chunk_id, str) and chunk_id, "add answers the stored id", chunk_id)
        message = await refused(nc, ADD, dict(chunk, content="short"))
        check("content" in message, "a chunk that breaks its constraints names the field", message)
        passed += 1

        deleted = await ok(nc, DELETE, {"id": "k1"}, "deleted")
        check(deleted is True, "delete says the chunk existed", deleted)
        gone = await ok(nc, DELETE, {"id": "never-stored"}, "deleted")
        check(gone is False, "an unknown id is not an error", gone)
        passed += 1

        for body in (b"", {}, {"project_id": "p1"}):
            stats = await ok(nc, STATS, body, "stats")
            check(set(stats) == STATS_KEYS, f"stats have exactly {sorted(STATS_KEYS)}", stats)
        passed += 1

        context = await ok(nc, CONTEXT, {
            "project_id": "p1",
            "query": "add a health endpoint",
            "budget_chars": 8000,
            "limit": 20,
        }, "context")
        check(set(context) == CONTEXT_KEYS, f"a context has exactly {sorted(CONTEXT_KEYS)}", context)
        check(len(context["chunk_ids"]) == len(context["sources"]), "one source per packed chunk", context)
        check(len(context["chunk_ids"]) == len(context["excerpts"]), "one excerpt per packed chunk", context)
        passed += 1

        message = await refused(nc, SEARCH, b'{"query": ')
        check("JSON" in message, "a malformed request is told it is not JSON", message)
        await refused(nc, SEARCH, b"[1, 2]")
        message = await refused(nc, SEARCH, {"query": "q"})
        check("limit" in message, "a missing field is named", message)
        message = await refused(nc, SEARCH, {"query": "q", "limit": 5, "limt": 1})
        check("limt" in message, "an unknown field is named", message)
        message = await refused(nc, DELETE, {"id": ""})
        check("id" in message, "a blank id is named", message)
        passed += 1

        # After every error above, the subjects still serve.
        await ok(nc, SEARCH, {"query": "still serving", "limit": 1}, "hits")
        passed += 1
    finally:
        await nc.close()
    print(f"python knowledge contract: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(main(sys.argv[1])))
    except ContractBroken as e:
        print(f"contract broken: {e}", file=sys.stderr)
        sys.exit(1)
