"""The calibration cache: one human-readable JSON file per calibrated model.

    {
      "header": {"format_version": 3, "created": "...", "key": {...}, "info": {...}},
      "cache_hash": "<sha256 of format version, key and values>",
      "activations": {"<tensor>": {"amax": 2.64, "scale": 0.0208, "max": 2.64}, ...},
      "weights": {"<initializer>": {"axis": 0, "scales": [...]}, ...}
    }

`key` holds everything the statistics depend on (model, weights, image size, dataset,
subset, algorithm, ONNX file); a cache is reused only when every key field matches.
`info` is provenance for people (library versions, timing) and never invalidates. The INT8
CPU path (sut/cpu_isa.py) is not a key field: it changes how a graph stores the weights
(reduce-range: the same thresholds at 7 bits), not any value cached here.
`cache_hash` is stable across rebuilds of identical content, so later caches (TensorRT
engines) can include it in their own keys.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.algorithms import scale_from_amax
from calibration.collect import CalibrationStats, WeightScales
from plumbing.errors import OutputError, one_line
from plumbing.files import atomic_path

log = logging.getLogger(__name__)

# Bump when the file's layout or the meaning of a value changes: older files then rebuild.
# 2: Conv outputs are calibrated too (the Q/DQ graph quantizes them).
# 3: a Conv followed by a Relu is calibrated after the Relu (where the graph quantizes it).
FORMAT_VERSION = 3
_FILE_MODE = 0o644


class CacheFormatError(ValueError):
    """A cache file that is not JSON or lacks what this version writes."""


class CacheVersionError(CacheFormatError):
    """A cache file written in another format version (an older or newer deepgap)."""

    def __init__(self, found: Any) -> None:
        super().__init__(f"format version {found!r}, expected {FORMAT_VERSION}")
        self.found = found


@dataclass(frozen=True)
class ActivationRange:
    amax: float  # the calibrated clipping range
    max: float  # the largest |x| seen; amax < max means the algorithm clips

    @property
    def scale(self) -> float:
        return float(scale_from_amax(self.amax))


@dataclass
class CalibrationCache:
    """Calibrated ranges of one model, keyed by what they were computed from."""

    key: dict[str, Any]
    activations: dict[str, ActivationRange]
    weights: dict[str, WeightScales]
    created: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, key: dict[str, Any], stats: CalibrationStats) -> CalibrationCache:
        return cls(
            key=dict(key),
            activations={
                name: ActivationRange(amax=float(amax), max=float(stats.activation_max[name]))
                for name, amax in stats.activations.items()
            },
            weights=dict(stats.weights),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            info={"samples": stats.samples, "seconds": round(stats.seconds, 3)},
        )

    @property
    def activation_amax(self) -> dict[str, float]:
        """Calibrated amax per activation tensor (what INT8 graph builders consume)."""
        return {name: rng.amax for name, rng in self.activations.items()}

    @property
    def weight_scales(self) -> dict[str, np.ndarray]:
        """float32 per-output-channel scales per weight initializer."""
        return {name: w.scales for name, w in self.weights.items()}

    @property
    def activation_scales(self) -> dict[str, float]:
        """INT8 scale (amax / 127) per activation tensor."""
        return {name: rng.scale for name, rng in self.activations.items()}

    @property
    def cache_hash(self) -> str:
        """sha256 of the format version, key and calibrated values (not `created`, `info`)."""
        content = {"format_version": FORMAT_VERSION, "key": self.key, **self._body()}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "header": {
                "format_version": FORMAT_VERSION,
                "created": self.created,
                "key": self.key,
                "info": self.info,
            },
            "cache_hash": self.cache_hash,
            **self._body(),
        }

    @classmethod
    def from_json(cls, data: Any) -> CalibrationCache:
        """Parse what `to_json` wrote. Raises CacheFormatError for anything else."""
        try:
            header = data["header"]
            version = header["format_version"]
        except (KeyError, TypeError) as exc:
            raise CacheFormatError(f"no header format_version ({type(exc).__name__}: {exc})") from exc
        if version != FORMAT_VERSION:
            raise CacheVersionError(version)
        try:
            cache = cls(
                key=dict(header["key"]),
                activations={
                    str(name): ActivationRange(amax=float(v["amax"]), max=float(v["max"]))
                    for name, v in data["activations"].items()
                },
                weights={
                    str(name): WeightScales(
                        axis=int(v["axis"]), scales=np.asarray(v["scales"], dtype=np.float32)
                    )
                    for name, v in data["weights"].items()
                },
                created=str(header.get("created", "")),
                info=dict(header.get("info", {})),
            )
            matches = data["cache_hash"] == cache.cache_hash
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CacheFormatError(f"unexpected content ({type(exc).__name__}: {exc})") from exc
        if not matches:
            # Edited by hand or damaged: the values no longer match what was calibrated.
            raise CacheFormatError("cache_hash does not match the content")
        return cache

    def _body(self) -> dict[str, Any]:
        return {
            "activations": {
                name: {"amax": rng.amax, "scale": rng.scale, "max": rng.max}
                for name, rng in self.activations.items()
            },
            # float(np.float32) is exact in a Python float, so values survive the round trip
            # through JSON bit for bit and the hash is the same after reading back.
            "weights": {
                name: {"axis": w.axis, "scales": [float(s) for s in np.asarray(w.scales, np.float32)]}
                for name, w in self.weights.items()
            },
        }


def read_cache(path: Path) -> CalibrationCache:
    """Read a cache file. Raises OSError if unreadable, CacheFormatError if malformed."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheFormatError(f"not JSON ({exc})") from exc
    return CalibrationCache.from_json(data)


def write_cache(cache: CalibrationCache, path: Path) -> None:
    """Write atomically: a reader (or a crash) never leaves a half-written cache."""
    text = render_json(cache.to_json())
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, _FILE_MODE)  # whatever the umask: a cache is meant to be shared
    except OSError as exc:
        raise OutputError(f"cannot write calibration cache {path}: {one_line(exc)}") from exc


def render_json(data: dict[str, Any]) -> str:
    """JSON with indent=2, except that each weight's scale list stays on one line: a
    ResNet50 has about 27 000 output channels, one line each would bury the header."""
    folded = copy.deepcopy(data)
    lines: dict[str, str] = {}
    for index, entry in enumerate(folded.get("weights", {}).values()):
        # NUL cannot occur in a tensor name, so the placeholder never collides with content.
        token = f"\0scales-{index}"
        lines[json.dumps(token)] = json.dumps(entry["scales"], allow_nan=False)
        entry["scales"] = token
    text = json.dumps(folded, indent=2, allow_nan=False)
    for token, line in lines.items():
        text = text.replace(token, line, 1)
    return text + "\n"


def load_or_build(
    key: dict[str, Any],
    build_fn: Callable[[], CalibrationStats],
    path: Path | str,
    info: dict[str, Any] | None = None,
) -> CalibrationCache:
    """The cache at `path` if its key equals `key` field for field; otherwise
    `build_fn()` turned into a cache (with provenance `info` added) and written to `path`.

    The log says why a rebuild happened: no file, an unreadable file (a warning), or which
    key fields changed.
    """
    path = Path(path)
    key = _normalised(key)
    cached, level, reason = _reusable(key, path)
    if cached is not None:
        log.info("calibration cache reused: %s", path)
        return cached
    log.log(level, "%s", reason)
    cache = CalibrationCache.from_stats(key, build_fn())
    cache.info.update(info or {})
    write_cache(cache, path)
    log.info("calibration cache written: %s", path)
    return cache


def key_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'field: old -> new' for each differing field; nested dicts as dotted names."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    missing = object()
    changes = []
    for name in sorted(set(flat_old) | set(flat_new), key=_field_order(flat_new, flat_old)):
        before, after = flat_old.get(name, missing), flat_new.get(name, missing)
        if before != after:
            shown = ["(none)" if v is missing else _short(v) for v in (before, after)]
            changes.append(f"{name}: {shown[0]} -> {shown[1]}")
    return changes


def _reusable(key: dict[str, Any], path: Path) -> tuple[CalibrationCache | None, int, str]:
    """(the cache, 0, "") when the file at `path` matches `key`, else (None, log level, why)."""
    if not path.exists():
        return None, logging.INFO, f"no calibration cache at {path}; building it"
    try:
        cached = read_cache(path)
    except CacheVersionError as exc:
        # An upgrade, not damage: the same one-line reason as any changed key field.
        change = f"format_version: {exc.found} -> {FORMAT_VERSION}"
        return None, logging.INFO, f"calibration cache stale ({change}); rebuilding {path}"
    except (OSError, CacheFormatError) as exc:
        return None, logging.WARNING, f"calibration cache {path} is unreadable ({one_line(exc)}); rebuilding"
    changes = key_changes(cached.key, key)
    if changes:
        return None, logging.INFO, f"calibration cache stale ({'; '.join(changes)}); rebuilding {path}"
    return cached, 0, ""


def _normalised(key: dict[str, Any]) -> dict[str, Any]:
    # The key as it reads back from JSON (tuples become lists), so a fresh key compares
    # and hashes exactly like a stored one.
    try:
        return json.loads(json.dumps(key, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"calibration cache key must be plain JSON data: {exc}") from exc


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, item in value.items():
        dotted = f"{prefix}{name}"
        if isinstance(item, dict) and item:
            flat.update(_flatten(item, dotted + "."))
        else:
            flat[dotted] = item
    return flat


def _field_order(*flats: dict[str, Any]) -> Callable[[str], tuple[int, str]]:
    # Key order as written by the caller (the new key first), unknown names last.
    order: dict[str, int] = {}
    for flat in flats:
        for name in flat:
            order.setdefault(name, len(order))
    return lambda name: (order.get(name, len(order)), name)


def _short(value: Any, limit: int = 24) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
