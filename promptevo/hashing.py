"""Stable content hashes: ids for configs, prompts and images that do not depend on run order."""

import hashlib
import json
from typing import Any


def stable_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_hex(data: bytes | str, length: int = 64) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:length]


def config_hash(value: Any) -> str:
    return sha256_hex(stable_json(value), 16)
