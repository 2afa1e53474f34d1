"""Write the JSON Schema of ``record.json`` (from ``egsbench.benchmark.records.Record``) to ``results/schema/``.

Usage::

    python scripts/write_record_schema.py

Run it after changing the ``Record`` model; ``tests/harness/test_records.py`` fails while the
checked-in schema and the model differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from egsbench.benchmark.records import write_schema

OUT = Path(__file__).resolve().parents[1] / "results" / "schema" / "record.schema.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    print(f"wrote {write_schema(parser.parse_args().out)}")


if __name__ == "__main__":
    main()
