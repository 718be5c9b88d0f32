"""Helpers shared by the bench/ scripts: the checkout's commit and an atomic JSON write."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commit() -> str:
    """The checkout's short git commit ('unknown' outside one)."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           cwd=HERE)
    except OSError:
        return "unknown"
    return r.stdout.strip() or "unknown"


def header(**extra) -> dict:
    """Date (UTC), machine, CPU count and commit for a results document."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "commit": commit(), **extra}


def write_json(path: str, doc: dict) -> None:
    """Write doc to path through a temporary file: a failed write leaves the old file whole."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {path}")
