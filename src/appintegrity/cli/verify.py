"""``appintegrity verify FILE.json…``: verify vector files and print one JSON conclusion each.

Format and exit statuses: ``../shared/vectors/README.md``. 0 valid, 1 invalid (with the reason),
2 the file itself is unusable (not JSON, unknown ``kind``, missing field, kind not installed),
3 the verifier itself failed on a file (a bug: its traceback goes to stderr, and the files after
it are still verified). With several files the worst status wins. ``--expect`` compares each
conclusion with the file's ``expect`` instead, and exits 0 only if every file concludes as it
says (for CI).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appintegrity.cli.vectors import VectorFormatError, VectorRunner
from appintegrity.errors import AppIntegrityError, VerificationError

KINDS = ("apple-attestation", "apple-assertion", "apple-receipt", "play-integrity")
VALID, INVALID, UNUSABLE, INTERNAL_ERROR = 0, 1, 2, 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="verify vector files (attestations, assertions, receipts, Play Integrity tokens)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE.json", help="vector files to verify")
    parser.add_argument(
        "--expect",
        action="store_true",
        help="compare each conclusion with the file's 'expect'; exit 0 only if all match",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    worst = VALID
    several = len(args.files) > 1
    mismatches = 0
    for name in args.files:
        try:
            status, conclusion, vector = conclude(Path(name))
        except Exception as exc:  # noqa: BLE001 - reported as a bug, never as a verdict
            status, conclusion, vector = _internal_error(name, exc)
        if args.expect:
            if status != INTERNAL_ERROR:
                status, conclusion = _compare(conclusion, vector)
            mismatches += status != VALID
        if several or args.expect:
            conclusion = {"file": name, **conclusion}
        print(json.dumps(conclusion, sort_keys=False), flush=True)
        worst = max(worst, status)
    if args.expect:
        total = len(args.files)
        print(f"{total - mismatches}/{total} files conclude as they expect", file=sys.stderr)
    return worst


def _internal_error(
    name: str, exc: Exception
) -> tuple[int, dict[str, object], Mapping[str, Any] | None]:
    """A bug in the verifier, not a conclusion about the file: say so (with the traceback on
    stderr) and go on with the other files."""
    print(f"appintegrity verify: internal error on {name}:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    message = f"the verifier failed on this file ({type(exc).__name__}: {exc}); please report it"
    return INTERNAL_ERROR, {"valid": None, "error": "internal_error", "message": message}, None


def conclude(path: Path) -> tuple[int, dict[str, object], Mapping[str, Any] | None]:
    """Verify one file: (exit status, JSON conclusion, the parsed vector if it was usable)."""
    try:
        vector = _read(path)
        runner = _runner(str(vector["kind"]))
        verify_at = _verify_at(vector)
        inputs = vector["input"]
        result = runner(inputs, verify_at)
    except VectorFormatError as exc:
        return UNUSABLE, {"valid": None, "error": "unusable_vector", "message": str(exc)}, None
    except VerificationError as exc:
        return INVALID, {"valid": False, "reason": exc.reason, "message": exc.message}, vector
    except AppIntegrityError as exc:
        # Not a verdict on the object: the vector's own material (keys, roots) is unusable.
        return UNUSABLE, {"valid": None, "error": exc.code, "message": exc.message}, None
    return VALID, {"valid": True, **result}, vector


def _read(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VectorFormatError(f"cannot read {path}: {exc}") from exc
    try:
        vector = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VectorFormatError(f"{path} is not JSON: {exc}") from exc
    except RecursionError:
        # Nested deeper than the parser can follow: no vector is shaped like that.
        raise VectorFormatError(
            f"{path} is not JSON this verifier can read: nested too deeply"
        ) from None
    if not isinstance(vector, dict):
        raise VectorFormatError(f"{path} does not hold a JSON object")
    for field in ("kind", "verify_at", "input"):
        if field not in vector:
            raise VectorFormatError(f"{path} has no '{field}' field")
    if not isinstance(vector["input"], dict):
        raise VectorFormatError("'input' must be a JSON object")
    return vector


def _runner(kind: str) -> VectorRunner:
    if kind not in KINDS:
        raise VectorFormatError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    module_name = "appintegrity.cli.vectors." + kind.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise VectorFormatError(
            f"kind {kind!r} is not supported yet by this installation"
        ) from None
    runner: VectorRunner = module.run
    return runner


def _verify_at(vector: Mapping[str, Any]) -> datetime:
    text = vector["verify_at"]
    if not isinstance(text, str):
        raise VectorFormatError("'verify_at' must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise VectorFormatError(f"'verify_at' is not ISO 8601: {text!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _compare(
    conclusion: dict[str, object], vector: Mapping[str, Any] | None
) -> tuple[int, dict[str, object]]:
    """(0 if the conclusion is what the file expects, else 1; the conclusion with the diff)."""
    if vector is None:
        return UNUSABLE, conclusion
    expect = vector.get("expect")
    if not isinstance(expect, dict) or "valid" not in expect:
        return UNUSABLE, {**conclusion, "message": "the file has no 'expect' with 'valid'"}
    differences: list[str] = []
    for key, wanted in expect.items():
        if expect.get("valid") is False and key not in ("valid", "reason"):
            continue
        found = conclusion.get(key)
        if not _same(found, wanted):
            differences.append(f"{key}: expected {wanted!r}, found {found!r}")
    matched = {**conclusion, "matches": not differences}
    if differences:
        matched["mismatches"] = differences
    return (VALID if not differences else INVALID), matched


def _same(found: object, wanted: object) -> bool:
    """Equal values; strings compared without surrounding whitespace, times as instants."""
    if isinstance(found, str) and isinstance(wanted, str):
        if found.strip() == wanted.strip():
            return True
        found_time, wanted_time = _instant(found), _instant(wanted)
        return found_time is not None and found_time == wanted_time
    return found == wanted


def _instant(text: str) -> datetime | None:
    if not text[:4].isdigit():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
