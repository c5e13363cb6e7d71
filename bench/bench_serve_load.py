"""A bounded load test of ``wanpy serve`` on the loopback interface (stops by itself).

Starts its own server (the random-weight Wan2.1-T2V-1.3B q4_0 of the model kit, 1 thread,
``--max-queue`` jobs waiting, a temporary results folder) on a free 127.0.0.1 port, then fires
``--submissions`` concurrent ``POST /v1/videos`` of tiny distinct requests (distinct prompts and
seeds) and checks that:

- every answer is 200 (accepted, with an id) or 429 (refused, with a positive integer Retry-After);
  accepted + refused == submissions, and the accepted ids are unique;
- every accepted job completes (polled until finished, with an overall deadline), each with the
  prompt and seed it was submitted with;
- ``GET /v1/videos`` lists exactly the accepted ids: none lost, none extra;
- GET latency while a generation runs stays under ``--latency-target-ms`` at p95: a separate
  thread (its own client) GETs ``/v1/videos?limit=100`` and ``/v1/videos/{the running job}``
  every ``--interval-ms``, and keeps the samples taken while a job is in_progress.

Prints a summary, writes the figures (written progressively, as each phase ends) to ``--json``, and
exits 1 when a check fails. Not a timed test: the figures belong to the machine it ran on.

    python bench/bench_serve_load.py [--submissions 50] [--max-queue 8] [--size 32x32] [--frames 1]
        [--steps 1] [--preview proj|vae] [--json bench/results/serve_load_cpu.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    import httpx
except ImportError:  # the client openai installs here is published as httpx2
    import httpx2 as httpx  # type: ignore[no-redef]

import wanpy
from wanpy.testing import cached_model_set

HOST = "127.0.0.1"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "serve_load_cpu.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(xs)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def summary_ms(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"count": 0, "median_ms": None, "p95_ms": None, "max_ms": None}
    return {"count": len(xs), "median_ms": round(statistics.median(xs) * 1000, 2),
            "p95_ms": round(percentile(xs, 95) * 1000, 2), "max_ms": round(max(xs) * 1000, 2)}


def machine() -> dict[str, Any]:
    return {"description": f"{os.cpu_count()} cores, {wanpy._core.BACKEND} build, {platform.machine()}, "
                           f"Python {platform.python_version()}",
            "cpu_count": os.cpu_count(), "backend": wanpy._core.BACKEND, "platform": platform.platform(),
            "httpx": f"{httpx.__name__} {httpx.__version__}"}


class Server:
    """``python -m wanpy serve`` as a subprocess; its log (JSON lines) goes to a file."""

    def __init__(self, kit: Any, port: int, max_queue: int, folder: Path) -> None:
        self.port, self.log_path = port, folder / "server.log"
        self.results = folder / "results"
        self.results.mkdir()
        cmd = [sys.executable, "-m", "wanpy", "serve", "--diffusion-model", str(kit.diffusion_model),
               "--vae", str(kit.vae), "--host", HOST, "--port", str(port), "--threads", "1",
               "--max-queue", str(max_queue), "--results-dir", str(self.results)]
        self.cmd = cmd
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float) -> float:
        start = time.perf_counter()
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() - start < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/v1/models").status_code == 200:
                        return time.perf_counter() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGINT to its PID, then wait; SIGKILL to its PID after ``timeout``."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            return self.proc.returncode
        finally:
            self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class LatencyProbe(threading.Thread):
    """GETs the list and the running job every ``interval`` s on its own client; keeps the
    samples taken while the list showed a job in_progress (tagged: during the submission burst or after)."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(name="latency-probe", daemon=True)
        self.url, self.interval = url, interval
        self.stop_event = threading.Event()
        self.burst = threading.Event()  # set while submissions are in flight
        self.samples: list[dict[str, Any]] = []  # {"route", "seconds", "burst", "t"}
        self.errors: list[str] = []
        self.idle_polls = 0
        self.running_seen: dict[str, list[float]] = {}  # id -> [first, last] seen in_progress
        self.t0 = time.perf_counter()

    def run(self) -> None:
        with httpx.Client(timeout=30.0) as client:
            while not self.stop_event.is_set():
                burst = self.burst.is_set()
                try:
                    t = time.perf_counter()
                    r = client.get(f"{self.url}/v1/videos", params={"limit": "100"})
                    listed = time.perf_counter() - t
                    if r.status_code != 200:
                        self.errors.append(f"GET /v1/videos: {r.status_code} {r.text[:200]}")
                    else:
                        running = [j["id"] for j in r.json()["data"] if j["wanpy_status"] == "in_progress"]
                        if running:
                            seen = self.running_seen.setdefault(running[0], [t - self.t0, t - self.t0])
                            seen[1] = t - self.t0
                            self.samples.append({"route": "list", "seconds": listed, "burst": burst,
                                                 "t": round(t - self.t0, 3)})
                            t = time.perf_counter()
                            r = client.get(f"{self.url}/v1/videos/{running[0]}")
                            one = time.perf_counter() - t
                            if r.status_code != 200:
                                self.errors.append(f"GET /v1/videos/{{id}}: {r.status_code} {r.text[:200]}")
                            else:
                                self.samples.append({"route": "one", "seconds": one, "burst": burst,
                                                     "t": round(t - self.t0, 3)})
                        else:
                            self.idle_polls += 1
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.stop_event.wait(self.interval)

    def report(self) -> dict[str, Any]:
        def pick(route: str | None = None, burst: bool | None = None) -> list[float]:
            return [s["seconds"] for s in self.samples
                    if (route is None or s["route"] == route) and (burst is None or s["burst"] == burst)]

        slowest = sorted(self.samples, key=lambda s: -s["seconds"])[:5]
        spans = [last - first for first, last in self.running_seen.values()]
        return {"all": summary_ms(pick()), "GET /v1/videos?limit=100": summary_ms(pick("list")),
                "GET /v1/videos/{id}": summary_ms(pick("one")),
                "during_submission_burst": summary_ms(pick(burst=True)),
                "after_submission_burst": summary_ms(pick(burst=False)),
                "slowest": [{"route": s["route"], "ms": round(s["seconds"] * 1000, 2), "burst": s["burst"],
                             "t_s": s["t"]} for s in slowest],
                "polls_with_nothing_running": self.idle_polls,
                "jobs_seen_running": len(spans),
                "job_in_progress_s": {"median": round(statistics.median(spans), 2) if spans else None,
                                      "min": round(min(spans), 2) if spans else None,
                                      "max": round(max(spans), 2) if spans else None}, "errors": self.errors[:20],
                "error_count": len(self.errors)}


async def submit_all(url: str, n: int, width: int, height: int, frames: int, steps: int, seed0: int,
                     preview: str | None) -> tuple[list[dict[str, Any]], float]:
    """n concurrent POST /v1/videos, released together; each answer as a record."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
        go = asyncio.Event()

        async def one(i: int) -> dict[str, Any]:
            body = {"prompt": f"load test {i}: a red fox in the snow", "size": f"{width}x{height}",
                    "num_frames": frames, "steps": steps, "seed": seed0 + i}
            if preview is not None:
                body["preview"] = preview
            rec: dict[str, Any] = {"i": i, "prompt": body["prompt"], "seed": body["seed"]}
            await go.wait()
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/videos", json=body)
            except httpx.HTTPError as exc:
                rec.update(outcome="error", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t)
                return rec
            rec.update(status=r.status_code, seconds=time.perf_counter() - t)
            if r.status_code == 200:
                j = r.json()
                rec.update(outcome="accepted", id=j.get("id"), wanpy_status=j.get("wanpy_status"))
            elif r.status_code == 429:
                rec.update(outcome="refused", retry_after=r.headers.get("retry-after"),
                           code=(r.json().get("error") or {}).get("code"))
            else:
                rec.update(outcome="other", body=r.text[:300])
            return rec

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0.05)  # every task waiting on the event
        start = time.perf_counter()
        go.set()
        records = await asyncio.gather(*tasks)
        return list(records), time.perf_counter() - start


async def poll_until_done(url: str, ids: list[str], deadline: float,
                          interval: float = 0.25) -> dict[str, dict[str, Any]]:
    """Each id's last job JSON, once every one has finished or the deadline (perf_counter) passed."""
    last: dict[str, dict[str, Any]] = {}
    pending = set(ids)
    async with httpx.AsyncClient(timeout=30.0) as client:
        while pending and time.perf_counter() < deadline:
            for vid in sorted(pending):
                r = await client.get(f"{url}/v1/videos/{vid}")
                if r.status_code != 200:
                    last[vid] = {"http_status": r.status_code, "body": r.text[:300]}
                    pending.discard(vid)
                    continue
                last[vid] = r.json()
                if last[vid]["wanpy_status"] in ("completed", "failed", "cancelled", "expired"):
                    pending.discard(vid)
            if pending:
                await asyncio.sleep(interval)
    return last


async def list_all(url: str) -> list[dict[str, Any]]:
    """Every job GET /v1/videos lists, page by page (limit=100, after=...)."""
    out: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "100", "order": "asc"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        while True:
            r = await client.get(f"{url}/v1/videos", params=params)
            r.raise_for_status()
            page = r.json()
            out.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return out
            params["after"] = page["last_id"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submissions", type=int, default=50)
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--size", default="32x32")
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--preview", choices=("proj", "vae"), help="ask a preview every step (default: none)")
    p.add_argument("--seed", type=int, default=1000, help="the first submission's seed (then +1 each)")
    p.add_argument("--interval-ms", type=float, default=20.0, help="the latency probe's pause between rounds")
    p.add_argument("--latency-target-ms", type=float, default=100.0)
    p.add_argument("--deadline", type=float, default=600.0, help="seconds for every accepted job to finish")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    a = p.parse_args()
    width, height = map(int, a.size.split("x"))
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    report: dict[str, Any] = {
        "bench": "bench/bench_serve_load.py", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "parameters": {"submissions": a.submissions, "max_queue": a.max_queue, "size": a.size, "frames": a.frames,
                       "steps": a.steps, "preview": a.preview, "seeds": [a.seed, a.seed + a.submissions - 1],
                       "threads": 1, "interval_ms": a.interval_ms, "latency_target_ms": a.latency_target_ms,
                       "deadline_s": a.deadline, "model": Path(kit.diffusion_model).name},
        "checks": {}, "phase": "starting"}
    checks: dict[str, bool] = report["checks"]

    def save() -> None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.json.with_suffix(a.json.suffix + ".part")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(a.json)

    save()
    with tempfile.TemporaryDirectory(prefix="wanpy-bench-serve-") as folder:
        server = Server(kit, free_port(), a.max_queue, Path(folder))
        report["parameters"]["server_command"] = " ".join(server.cmd[1:]).replace(folder, "$TMP")
        probe: LatencyProbe | None = None
        try:
            report["ready_s"] = round(server.wait_ready(a.ready_timeout), 2)
            print(f"server ready on {server.url} in {report['ready_s']} s", flush=True)
            report["phase"] = "submitting"
            save()

            probe = LatencyProbe(server.url, a.interval_ms / 1000)
            probe.burst.set()
            probe.start()
            records, burst_s = asyncio.run(submit_all(server.url, a.submissions, width, height, a.frames,
                                                      a.steps, a.seed, a.preview))
            probe.burst.clear()
            accepted = [r for r in records if r["outcome"] == "accepted"]
            refused = [r for r in records if r["outcome"] == "refused"]
            others = [r for r in records if r["outcome"] not in ("accepted", "refused")]
            retry_afters = [r.get("retry_after") for r in refused]
            bad_retry = [ra for ra in retry_afters if ra is None or not ra.isdigit() or int(ra) < 1]
            ids = [r["id"] for r in accepted]
            checks["every_answer_200_or_429"] = not others
            checks["accepted_plus_refused_equals_submissions"] = len(accepted) + len(refused) == a.submissions
            checks["refusals_have_positive_integer_retry_after"] = not bad_retry
            checks["refusals_are_queue_full"] = all(r.get("code") == "queue_full" for r in refused)
            checks["accepted_ids_present_and_unique"] = all(ids) and len(set(ids)) == len(ids)
            post_s = [r["seconds"] for r in records]
            report["submissions"] = {
                "accepted": len(accepted), "refused_429": len(refused), "other": len(others),
                "other_answers": others[:10], "burst_wall_s": round(burst_s, 3),
                "post_latency": summary_ms(post_s),
                "retry_after_values": sorted({ra for ra in retry_afters if ra is not None}),
                "bad_retry_after": bad_retry[:10],
                "accepted_status_at_answer": sorted({r.get("wanpy_status") or "?" for r in accepted}),
                "accepted_submission_indexes": sorted(r["i"] for r in accepted)}
            report["phase"] = "polling"
            save()
            print(f"{a.submissions} submissions in {burst_s:.2f} s: {len(accepted)} accepted, {len(refused)} "
                  f"refused (429, Retry-After {report['submissions']['retry_after_values']}), {len(others)} other",
                  flush=True)

            t = time.perf_counter()
            final = asyncio.run(poll_until_done(server.url, sorted(set(ids)), t + a.deadline))
            report["poll_wall_s"] = round(time.perf_counter() - t, 2)
            probe.stop_event.set()
            probe.join(30)
            statuses = {vid: final.get(vid, {}).get("wanpy_status", "unseen") for vid in ids}
            counts: dict[str, int] = {}
            for s in statuses.values():
                counts[s] = counts.get(s, 0) + 1
            failed = {vid: final[vid] for vid, s in statuses.items() if s != "completed" and vid in final}
            mismatched = [r["id"] for r in accepted if r["id"] in final and
                          (final[r["id"]].get("prompt") != r["prompt"] or final[r["id"]].get("seed") != r["seed"])]
            checks["every_accepted_job_completed"] = bool(ids) and counts.get("completed", 0) == len(ids)
            checks["jobs_keep_their_prompt_and_seed"] = not mismatched
            report["jobs"] = {"final_status_counts": counts,
                              "not_completed": [{"id": vid, "status": j.get("wanpy_status"), "error": j.get("error")}
                                                for vid, j in list(failed.items())[:10]],
                              "prompt_or_seed_mismatch": mismatched[:10]}
            report["phase"] = "listing"
            save()

            listed = asyncio.run(list_all(server.url))
            listed_ids = [j["id"] for j in listed]
            lost, extra = sorted(set(ids) - set(listed_ids)), sorted(set(listed_ids) - set(ids))
            dup_listed = len(listed_ids) - len(set(listed_ids))
            checks["list_is_exactly_the_accepted_ids"] = not lost and not extra and not dup_listed
            report["listing"] = {"listed": len(listed_ids), "lost": lost, "extra": extra,
                                 "duplicated_in_list": dup_listed}

            lat = probe.report()
            report["get_latency_while_generating"] = lat
            p95 = lat["all"]["p95_ms"]
            checks["latency_probe_had_samples_and_no_errors"] = lat["all"]["count"] >= 20 and not lat["error_count"]
            checks[f"get_p95_under_{a.latency_target_ms:g}_ms"] = p95 is not None and p95 < a.latency_target_ms
            report["phase"] = "done"
        except Exception as exc:
            report["phase"] = f"aborted: {type(exc).__name__}: {exc}"
            checks["ran_to_the_end"] = False
            print(f"aborted: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            if probe is not None:
                probe.stop_event.set()
                probe.join(30)
            report["server_exit_code"] = server.stop()
            report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            report["passed"] = bool(checks) and all(checks.values())
            if not report["passed"]:
                report["server_log_tail"] = server.log_tail(15).splitlines()
            save()

    lat = report.get("get_latency_while_generating", {})
    print("| GET while a job is in_progress | samples | median ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for key in ("all", "GET /v1/videos?limit=100", "GET /v1/videos/{id}", "during_submission_burst",
                "after_submission_burst"):
        s = lat.get(key)
        if s:
            print(f"| {key} | {s['count']} | {s['median_ms']} | {s['p95_ms']} | {s['max_ms']} |")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"load average: start {report['load_average_at_start']}, end {report['load_average_at_end']}; "
          f"JSON: {a.json}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
