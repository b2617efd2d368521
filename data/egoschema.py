"""EgoSchema -> multiple-choice QA file, one question a line, as ``longvivit.captioning.qa.read_qa_jsonl`` reads it.

Official format (source: EgoSchema release, https://github.com/egoschema/EgoSchema, ``questions.json`` and
``subset_answers.json``; Mangalam et al. "EgoSchema: A Diagnostic Benchmark for Very Long-form Video Language
Understanding", NeurIPS 2023)::

    questions.json       [{"q_uid": "001934bb-81bd-4cd8-a574-0472ef3f6678", "google_drive_id": "15yGB0T...",
                           "question": "...", "option 0": "...", "option 1": "...", ..., "option 4": "..."}, ...]
    subset_answers.json  {"0074f737-11cb-497d-8d07-77c3a8127391": 3, ...}

The answers of the 500-question public subset ship in ``subset_answers.json``; the other ~4,500 are scored by the
authors' server, so those questions are written without an answer (``read_qa_jsonl`` accepts that) unless
``--subset`` keeps only the answered ones. Each question has its own 3-minute clip, ``<q_uid>.mp4`` in the
release's ``videos/`` (any extension, any sub-folder here).

Output lines: ``{"video", "question", "options", "answer", "id"}`` (``id`` = ``q_uid``).

    python data/egoschema.py --questions questions.json --answers subset_answers.json --subset \
        --videos egoschema/videos --out egoschema_subset.jsonl
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python data/egoschema.py`: the package lives one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import add_common_args, build_manifest, qa_entry, read_json  # noqa: E402

_OPTION = re.compile(r"^option (\d+)$")


def options_of(record: Mapping[str, Any]) -> list[Any]:
    """The ``"option <i>"`` values of a question, in the order of ``i``."""
    numbered = [(int(m[1]), value) for key, value in record.items() if (m := _OPTION.match(key))]
    return [value for _, value in sorted(numbered, key=lambda x: x[0])]


def build_entries(questions: Sequence[Mapping[str, Any]], answers: Mapping[str, Any],
                  subset: bool) -> Iterator[dict[str, Any]]:
    """QA records (video resolved later): ``{"question", "options", "answer"?, "id"}``, the id (``q_uid``) naming
    the video.

    Args:
        questions: The records of ``questions.json``.
        answers: ``{q_uid: index}`` (empty when not known).
        subset: Only the questions that have an answer.

    Yields:
        One record per well-formed question, in file order; a malformed one is named on stderr and skipped.
    """
    seen: set[str] = set()
    for record in questions:
        uid = str(record.get("q_uid") or "").strip()
        if not uid or uid in seen or (subset and uid not in answers):
            continue
        seen.add(uid)
        try:
            entry = qa_entry(record.get("question"), options_of(record), answers.get(uid), uid)
        except ValueError as err:
            print(f"egoschema: {uid}: {err}; skipped", file=sys.stderr)
            continue
        yield entry


def main(argv: Sequence[str] | None = None) -> int:
    """Build an EgoSchema QA file; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", required=True, type=Path, help="questions.json")
    parser.add_argument("--answers", type=Path, default=None, help="subset_answers.json ({q_uid: index})")
    parser.add_argument("--subset", action="store_true", help="only the questions with an answer (the public 500)")
    add_common_args(parser)
    args = parser.parse_args(argv)

    questions = read_json(args.questions)
    if not isinstance(questions, list) or not all(isinstance(q, dict) and "q_uid" in q for q in questions[:10]):
        parser.error(f"{args.questions}: not EgoSchema's questions.json (a list of {{'q_uid', 'question', "
                     "'option 0', ...}})")
    answers = read_json(args.answers) if args.answers else {}
    if not isinstance(answers, dict):
        parser.error(f"{args.answers}: not EgoSchema's subset_answers.json ({{q_uid: index}})")
    if args.subset and not answers:
        parser.error("--subset needs --answers")

    return build_manifest("egoschema", args, build_entries(questions, answers, args.subset), key="id")


if __name__ == "__main__":
    sys.exit(main())
