"""The demo's held-out questions written as benchmark files, in the field's formats and phrasing.

Each question becomes a multiple-choice question (a number, a colour, a shape, a size, or yes or
no, as options ``A``.. in a seeded order) asked in words the demo model was *not* trained on
(``own`` phrasing: "In this drawing, what is the number of red squares?"), or in the generator's
own words (``trained``). :func:`write_benchmark` writes the rows as a VLMEvalKit TSV (base64
pictures), JSON Lines or JSON (pictures as files beside it, paths relative to it), Parquet or a
``save_to_disk`` folder (an ``image`` column as ``datasets`` writes it): the files
``llava-cot eval --data`` reads, made from pictures anyone can draw again.

    python -m langchain_llava_cot.eval.demo_files demo-mc.tsv --questions 300
"""

from __future__ import annotations

import argparse
import base64
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_llava_cot.demo.dataset import COLOURS, POSITIONS, SHAPES, SIZES, Example, examples
from langchain_llava_cot.eval.data import OPTION_LETTERS

__all__ = ["FORMATS", "demo_rows", "main", "own_phrasing", "write_benchmark"]

Phrasing = Literal["own", "trained"]

FORMATS = ("tsv", "jsonl", "json", "parquet", "folder")
"""What :func:`write_benchmark` writes: by the path's suffix, or ``folder`` for ``save_to_disk``."""

_RELATIONS = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "higher up than",
    "below": "lower down than",
}


def own_phrasing(example: Example) -> str:
    """The example's question in words the demo model was not trained on."""
    spec = example.spec
    first, second = spec.first, spec.second
    if spec.kind == "attribute":
        assert spec.cell is not None
        return f"Which {spec.attribute} does the shape in the {POSITIONS[spec.cell]} cell have?"
    if spec.kind == "spatial":
        assert first is not None and second is not None and spec.relation is not None
        relation = _RELATIONS[spec.relation]
        return f"Does the {first.colour} {first.shape} sit {relation} the {second.colour} {second.shape}?"
    if spec.kind == "comparison":
        assert first is not None and second is not None
        return f"Does the picture show a greater number of {first.plural} than of {second.plural}?"
    if spec.kind == "arithmetic" and spec.operation == "subtract":
        assert first is not None
        return f"If every one of the {first.plural} were taken away, how many shapes would remain?"
    if spec.kind == "arithmetic":
        assert first is not None and second is not None
        return f"What is the combined number of {first.plural} and {second.plural}?"
    assert first is not None
    return f"In this drawing, what is the number of {first.plural}?"


def _options(example: Example, rng: random.Random) -> list[str]:
    """The answer and its distractors, in a seeded order."""
    answer = example.answer
    if answer.isdigit():
        n = int(answer)
        others = [v for v in (n - 1, n + 1, n + 2, n - 2, n + 3) if v >= 0 and v != n]
        options = [answer, *(str(v) for v in others[:3])]
    elif answer in ("yes", "no"):
        options = ["yes", "no"]
    else:
        pool = next(p for p in (COLOURS, SHAPES, SIZES) if answer in p)
        options = list(pool)
    rng.shuffle(options)
    return options


def demo_rows(
    count: int, *, split: str = "test", start: int = 0, phrasing: Phrasing = "own"
) -> list[dict[str, Any]]:
    """``count`` of the demo's questions as VLMEvalKit rows (``image`` holds the PNG's bytes).

    They come from the classic world (shapes centred in a 3x3 grid), whose five kinds of
    question all have a short answer that multiple choice can offer.
    """
    rows = []
    for example in examples(split, count, start=start, world="classic"):  # type: ignore[arg-type]
        options = _options(example, random.Random(f"options:{split}:{example.index}"))
        letters = OPTION_LETTERS[: len(options)]
        rows.append(
            {
                "index": example.index,
                "question": own_phrasing(example) if phrasing == "own" else example.question,
                **dict(zip(letters, options)),
                "answer": letters[options.index(example.answer)],
                "category": example.kind,
                "image": example.image_bytes,
            }
        )
    return rows


def write_benchmark(path: str | Path, rows: Sequence[dict[str, Any]], form: str | None = None) -> Path:
    """Write ``rows`` to ``path`` in ``form`` (default: from the suffix; ``folder`` for ``save_to_disk``)."""
    path = Path(path)
    form = form or path.suffix.lower().lstrip(".") or "folder"
    if form not in FORMATS:
        msg = f"Write one of {', '.join(FORMATS)}, not {form!r}."
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "tsv":
        _write_tsv(path, rows)
    elif form in ("jsonl", "json"):
        _write_json(path, rows, lines=form == "jsonl")
    else:
        _write_datasets(path, rows, parquet=form == "parquet")
    return path


def _letters(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [letter for letter in OPTION_LETTERS if any(letter in row for row in rows)]


def _write_tsv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    header = ["index", "image", "question", *_letters(rows), "answer", "category"]
    lines = ["\t".join(header)]
    for row in rows:
        values = {**row, "image": base64.b64encode(row["image"]).decode()}
        lines.append("\t".join(str(values.get(column, "")) for column in header))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_json(path: Path, rows: Sequence[dict[str, Any]], *, lines: bool) -> None:
    pictures = path.parent / f"{path.stem}-images"
    pictures.mkdir(exist_ok=True)
    objects = []
    for row in rows:
        picture = pictures / f"{row['index']}.png"
        picture.write_bytes(row["image"])
        choices = [row[letter] for letter in OPTION_LETTERS if letter in row]
        objects.append(
            {
                "id": row["index"],
                "image": str(picture.relative_to(path.parent)),
                "question": row["question"],
                "choices": choices,
                "answer": row["answer"],
                "category": row["category"],
            }
        )
    if lines:
        path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    else:
        path.write_text(json.dumps(objects, indent=1), encoding="utf-8")


def _write_datasets(path: Path, rows: Sequence[dict[str, Any]], *, parquet: bool) -> None:
    import datasets

    letters = _letters(rows)
    columns: dict[str, list[Any]] = {
        "id": [str(r["index"]) for r in rows],
        "image": [{"bytes": r["image"], "path": f"{r['index']}.png"} for r in rows],
        "question": [r["question"] for r in rows],
        "choices": [[r[letter] for letter in letters if letter in r] for r in rows],
        "answer": [r["answer"] for r in rows],
        "category": [r["category"] for r in rows],
    }
    features = datasets.Features(
        id=datasets.Value("string"),
        image=datasets.Image(),
        question=datasets.Value("string"),
        choices=datasets.Sequence(datasets.Value("string")),
        answer=datasets.Value("string"),
        category=datasets.Value("string"),
    )
    dataset = datasets.Dataset.from_dict(columns, features=features)
    if parquet:
        dataset.to_parquet(str(path))
    else:
        dataset.save_to_disk(str(path))


def main(argv: Sequence[str] | None = None) -> int:
    """Write the demo's questions as a benchmark file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="FILE.tsv, .jsonl, .json, .parquet, or a folder (save_to_disk)")
    parser.add_argument("--questions", type=int, default=300, help="(default 300)")
    parser.add_argument("--split", default="test", choices=["test", "validation"], help="(default test)")
    parser.add_argument("--start", type=int, default=0, help="index of the first question (default 0)")
    parser.add_argument("--phrasing", default="own", choices=["own", "trained"], help="(default own)")
    args = parser.parse_args(argv)
    rows = demo_rows(args.questions, split=args.split, start=args.start, phrasing=args.phrasing)
    print(write_benchmark(args.path, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
