"""The script a user writes instead of ``mux run`` for an SSE stream (bench_e2e.py).

Run: ``python _e2e_user_sse.py URL N OUT.jsonl``. httpx streaming, a simple
line parser (``data:`` lines up to a blank line), ``json.loads`` of each
event, and one ``json.dumps`` line per event -- with the time it arrived --
appended to a JSON Lines file. Stops at N events or when the stream ends.
"""

import json
import sys
import time

import httpx


def main(url: str, n: int, out: str) -> None:
    count = 0
    data: list[str] = []
    with (
        open(out, "a") as file,
        httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as client,
        client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response,
    ):
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif not line and data:
                payload = json.loads("\n".join(data))
                data = []
                record = {"received_at": time.time(), "data": payload}
                file.write(json.dumps(record) + "\n")
                count += 1
                if count >= n:
                    break


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
