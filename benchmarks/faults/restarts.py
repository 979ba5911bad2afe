"""Does every request after a start get answered? (the fork hang of docs/decisions/no-thread-in-the-master.md)

    python -m benchmarks.faults.restarts [--rounds 12] [--requests 400] [--web-server uvicorn|gthread]

Starts `sonicsort serve` (2 workers × 4 threads) on 40 generated clips ``--rounds`` times.
After each start it sends ``--requests`` `/v1/tracks/ID/similar` requests from 4 keep-alive
clients, each with a 4 s timeout. It prints the unanswered ones per round. On the first
one it prints a `py-spy dump` of every worker, when py-spy is installed (`pip install py-spy`).
Before the fix, the master's banner thread could hold an import lock at a fork. That left
a worker stuck in 2 of 8 starts; after the fix, 12 of 12 starts were clean.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import requests

from ..harness import free_port, generated_catalog, wait_ready, worker_pids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--web-server", default="uvicorn", choices=["uvicorn", "gthread"])
    args = ap.parse_args()
    tmp, _, env = generated_catalog("sonicsort-restarts-", args.web_server)
    total = 0
    for r in range(args.rounds):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(tmp / f"serve{r}.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2",
                                     "--threads", "4"], env=env, stdout=log, stderr=subprocess.STDOUT)
        unanswered: list[int] = []
        try:
            wait_ready(url, proc)

            def client(i: int) -> None:
                with requests.Session() as http:
                    for j in range(args.requests // 4):
                        try:
                            http.get(f"{url}/v1/tracks/{1 + (i * 7 + j) % 40}/similar?k=10", timeout=4)
                        except requests.RequestException:
                            unanswered.append(1)
                            if len(unanswered) == 1 and shutil.which("py-spy"):
                                for pid in worker_pids(proc.pid):
                                    out = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True,
                                                         text=True)
                                    print(f"== worker {pid}\n{out.stdout}", flush=True)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(client, range(4)))
        finally:
            proc.terminate()
            proc.wait(30)
        total += len(unanswered)
        print(f"start {r + 1}: {len(unanswered)} of {args.requests} unanswered", flush=True)
    print(f"{args.rounds} starts, {total} unanswered requests in all")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
