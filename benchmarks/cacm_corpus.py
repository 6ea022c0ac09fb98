"""Write CACM (`../shared/data/cacm/cacm.tar.gz`, 3,204 HTML-wrapped documents) as a JSONL
corpus that `lsr index` / `lsr eval` read: `{"id": "CACM-0001", "text": ...}` per line, the
text inside `<pre>` with whitespace collapsed.

    python benchmarks/cacm_corpus.py /tmp/cacm.jsonl
    lsr eval /tmp/cacm.jsonl --queries ../shared/data/cacm/topics.cacm.txt \
        --qrels ../shared/data/cacm/qrels.cacm.txt --model bm25 --metrics map,p@30 --prf-docs 10
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cacm" / "cacm.tar.gz"
TAGS = re.compile(r"<[^>]+>")


def main(out: str) -> None:
    n = 0
    with tarfile.open(DATA) as tar, open(out, "w", encoding="utf-8") as f:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.isfile() or not member.name.endswith(".html"):
                continue
            html = tar.extractfile(member).read().decode("utf-8", "replace")
            text = " ".join(TAGS.sub(" ", html).split())
            f.write(json.dumps({"id": Path(member.name).stem, "text": text}) + "\n")
            n += 1
    print(f"{n} documents -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cacm.jsonl")
