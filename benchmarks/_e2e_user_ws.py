"""The script a user writes instead of ``mux run`` for a WebSocket (bench_e2e.py).

Run: ``python _e2e_user_ws.py URL N OUT.jsonl``. The ``websockets`` sync
client with its defaults, ``json.loads`` of each message, and one
``json.dumps`` line per message -- with the time it arrived -- appended to a
JSON Lines file. Stops at N messages or when the server closes.
"""

import json
import sys
import time

from websockets.sync.client import connect


def main(url: str, n: int, out: str) -> None:
    count = 0
    with open(out, "a") as file, connect(url) as ws:
        for message in ws:  # ends when the server closes normally
            payload = json.loads(message)
            record = {"received_at": time.time(), "data": payload}
            file.write(json.dumps(record) + "\n")
            count += 1
            if count >= n:
                break


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
