#!/usr/bin/env python3
"""Writes a hash-chained audit log of N synthetic records (agent fetches,
injector reviews, CLI writes; about 1 in 50 denied or failed) for
scripts/bench-audit-html. Names only, never a value.

usage: gen_audit.py N OUT.jsonl
"""
import hashlib
import json
import sys
from datetime import datetime, timedelta, timezone

n, out = int(sys.argv[1]), sys.argv[2]
prev = "0" * 64
start = datetime(2026, 11, 1, tzinfo=timezone.utc)
envs = ["dev", "staging", "prod", "prod-eu", "qa"]
with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        env = envs[i % len(envs)]
        ts = (start + timedelta(seconds=i * 2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        svc, key = f"svc{i % 40}", f"KEY{i % 7}"
        version = 1 + (i * 3) // n
        outcome, reason = "success", None
        if i % 97 == 0:
            outcome, reason = "denied", "service account not allowed for this environment"
        elif i % 211 == 0:
            outcome, reason = "failure", "AccessDeniedException from kms:Decrypt"
        if i % 10 == 0:
            comp, event, pod, actor = "injector", "review", f"{svc}-{i % 3000}", "system:serviceaccount:kube-system:replicaset-controller"
        elif i % 1000 == 1:
            comp, event, pod, actor = "cli", "rotate", None, "alice"
        else:
            comp, event, pod, actor = "agent", "fetch", f"{svc}-{i % 3000}", None
        rec = {
            "ts": ts, "seq": i + 1, "prev": prev, "component": comp, "event": event,
            "environment": env, "namespace": "apps", "pod": pod, "actor": actor,
            "secrets": [{"service": svc, "key": key, "version": version}],
            "outcome": outcome, "reason": reason, "duration_ms": 3,
        }
        line = json.dumps(rec, separators=(",", ":"))
        prev = hashlib.sha256(line.encode()).hexdigest()
        f.write(line + "\n")
