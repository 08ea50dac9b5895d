"""``python -m langchain_llava_cot.eval``: the same as ``llava-cot eval``."""

from langchain_llava_cot.eval.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
