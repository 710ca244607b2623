"""The script a user writes instead of ``mux run`` for a paged REST API (bench_e2e.py).

Run: ``python _e2e_user_rest.py URL N OUT.jsonl``. One ``httpx.Client``
(keep-alive) polling ``URL?after=<last step>`` back to back, ``json.loads``
of each page (``response.json()``), and one ``json.dumps`` line per item --
with the time it arrived -- appended to a JSON Lines file. Stops at N items
or at the first empty page.
"""

import json
import sys
import time

import httpx


def main(url: str, n: int, out: str) -> None:
    count = 0
    after = 0
    with open(out, "a") as file, httpx.Client(timeout=10.0) as client:
        while count < n:
            response = client.get(url, params={"after": after})
            response.raise_for_status()
            items = response.json()
            if not items:
                break
            received_at = time.time()
            for item in items:
                record = {"received_at": received_at, "data": item}
                file.write(json.dumps(record) + "\n")
            count += len(items)
            after = items[-1]["step"]


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
