#!/usr/bin/env python3
"""The orchestrator's NATS control plane, seen from another language's client (nats-py).

    python3 tests/python/test_control.py NATS_URL TASK_ID [WORKER_ID]

TASK_ID names a task that is stored and not finished (e.g. planned by a dry run); the script
cancels it. WORKER_ID, when given, names a live coder worker that workers.list must show.
Checks the JSON contract documented in README.md ("Operators: NATS CLI"): every reply is
JSON with "v": 1, failures are {"error": {"code", "message"}} replies, never silence.
Run by the Rust test `a_python_nats_client_gets_the_documented_json_contract`
(services/orchestrator/tests/control.rs); exits non-zero on the first broken expectation.
"""

import asyncio
import json
import sys
import time
import uuid

import nats
from nats.errors import NoRespondersError

LIST = "turbo.ctl.tasks.list"
GET = "turbo.ctl.tasks.get"
CANCEL = "turbo.ctl.tasks.cancel"
WORKERS = "turbo.ctl.workers.list"

# Upper bound for one reply, so a broken server fails the script instead of hanging it.
PATIENCE = 30.0
ROLES = {"planner", "coder", "tester", "reviewer"}
TASK_ITEM_KEYS = {"id", "title", "status", "progress", "current_phase", "created_at", "total_tokens"}


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


async def ok(nc, subject, body):
    reply = await request(nc, subject, body)
    check("error" not in reply, f"{subject} {body!r} failed", reply)
    return reply


async def refused(nc, subject, body, code):
    reply = await request(nc, subject, body)
    error = reply.get("error")
    check(isinstance(error, dict), f"{subject} {body!r}: expected an error reply", reply)
    check(error.get("code") == code, f"{subject} {body!r}: expected code {code}", reply)
    check(isinstance(error.get("message"), str) and error["message"], f"{subject}: the error has no message", reply)
    return error


async def main(url, task_id, worker_id=None):
    nc = await nats.connect(url, connect_timeout=PATIENCE, max_reconnect_attempts=0)
    passed = 0
    try:
        # The control plane may still be subscribing.
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                await request(nc, WORKERS, {})
                break
            except NoRespondersError:
                check(time.monotonic() < deadline, f"no orchestrator answers on {WORKERS}")
                await asyncio.sleep(0.05)

        listed = await ok(nc, LIST, {})
        tasks = listed.get("tasks")
        check(isinstance(tasks, list), "tasks.list has a tasks array", listed)
        check(task_id in [t.get("id") for t in tasks], f"tasks.list lists {task_id}", listed)
        for t in tasks:
            check(set(t) == TASK_ITEM_KEYS, f"a task item has exactly {sorted(TASK_ITEM_KEYS)}", t)
        passed += 1

        mine = next(t for t in tasks if t["id"] == task_id)
        filtered = await ok(nc, LIST, {"status": mine["status"], "limit": 5})
        check(task_id in [t["id"] for t in filtered["tasks"]], "tasks.list filters by status", filtered)
        check(all(t["status"] == mine["status"] for t in filtered["tasks"]), "only that status", filtered)
        check(len(filtered["tasks"]) <= 5, "at most limit tasks", filtered)
        passed += 1

        full = await ok(nc, GET, {"id": task_id})
        task = full.get("task", {})
        check(task.get("id") == task_id, "tasks.get answers with the task", full)
        plan = task.get("execution_plan") or {}
        check(isinstance(plan.get("phases"), list) and plan["phases"], "the task carries its plan", full)
        check(isinstance(full.get("phases"), list), "tasks.get lists the phases", full)
        check(isinstance(full.get("usage"), dict) and "planner" in full["usage"], "usage by role", full)
        check(isinstance(full.get("total_tokens"), int), "total_tokens", full)
        passed += 1

        by_prefix = await ok(nc, GET, {"id": task_id[:8]})
        check(by_prefix.get("task", {}).get("id") == task_id, "tasks.get by a unique prefix", by_prefix)
        passed += 1

        workers = await ok(nc, WORKERS, {})
        roles = workers.get("roles", {})
        check(set(roles) == ROLES, f"workers.list lists every role {sorted(ROLES)}", workers)
        for role, item in roles.items():
            check({"in_flight", "capacity", "workers"} <= set(item), f"role {role} has its load", workers)
        check(isinstance(workers.get("heartbeat_interval_ms"), int), "heartbeat_interval_ms", workers)
        if worker_id:
            listed_workers = {w["worker_id"]: w for w in roles["coder"]["workers"]}
            check(worker_id in listed_workers, f"workers.list shows {worker_id}", workers)
            w = listed_workers[worker_id]
            for key in ("in_flight", "capacity", "started_at", "last_heartbeat_at", "last_heartbeat_age_ms"):
                check(key in w, f"a worker has {key}", w)
        passed += 1

        error = await refused(nc, LIST, b'{"limit": ', "invalid_argument")
        check("JSON" in error["message"], "a malformed request is told it is not JSON", error)
        await refused(nc, GET, b"[1, 2]", "invalid_argument")
        passed += 1

        unknown = str(uuid.uuid4())
        error = await refused(nc, GET, {"id": unknown}, "not_found")
        check(unknown in error["message"], "not_found names the id", error)
        await refused(nc, CANCEL, {"id": unknown}, "not_found")
        passed += 1

        error = await refused(nc, LIST, {"status": "running"}, "invalid_argument")
        check("in_progress" in error["message"], "an unknown status lists the valid ones", error)
        check(error.get("fields", [{}])[0].get("field") == "status", "the broken field is named", error)
        await refused(nc, WORKERS, {"role": "builder"}, "invalid_argument")
        passed += 1

        cancelled = await ok(nc, CANCEL, {"id": task_id, "reason": "cancelled by the Python contract test"})
        check(cancelled.get("cancelled") is True and cancelled.get("status") == "cancelled", "tasks.cancel", cancelled)
        check(cancelled.get("id") == task_id, "tasks.cancel names the task", cancelled)
        after = await ok(nc, GET, {"id": task_id})
        check(after["task"]["status"] == "cancelled", "the task is cancelled", after)
        again = await ok(nc, CANCEL, {"id": task_id})
        check(again.get("cancelled") is False and again.get("status") == "cancelled", "a finished task", again)
        passed += 1

        # After every error above, the subscription still serves.
        await ok(nc, LIST, {"limit": 1})
        passed += 1
    finally:
        await nc.close()
    print(f"python control contract: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(main(*sys.argv[1:])))
    except ContractBroken as e:
        print(f"contract broken: {e}", file=sys.stderr)
        sys.exit(1)
