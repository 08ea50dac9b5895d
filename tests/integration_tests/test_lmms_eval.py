"""The lmms-eval model: lmms-eval itself runs ChatLlavaCoT on a local task over a local data file.

Needs the lane's venv with lmms-eval and this package (``make lmms-venv``, ``.ci/setup-lmms``); CI
builds it. The task is a YAML file, its helpers and a JSON Lines file of the demo's questions,
written here; nothing is downloaded (``HF_DATASETS_OFFLINE``).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from langchain_llava_cot.eval.demo_files import demo_rows, write_benchmark

LMMS_PYTHON = Path(__file__).parents[2] / ".venv-lmms" / "bin" / "python"

pytestmark = [
    pytest.mark.skipif(not LMMS_PYTHON.exists(), reason="lmms-eval's venv is not built: make lmms-venv"),
    pytest.mark.timeout(1200),
]

TASK = """\
task: demo_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
"""

UTILS = """\
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent


def doc_to_visual(doc):
    return [Image.open(HERE / doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]


def process_results(doc, results):
    expected = doc["choices"][ord(doc["answer"]) - ord("A")]
    return {"accuracy": float(results[0].strip() == expected)}
"""


def test_lmms_eval_runs_the_model_on_a_local_task(tmp_path: Path) -> None:
    task = tmp_path / "task"
    data = write_benchmark(task / "demo.jsonl", demo_rows(3, phrasing="trained"))
    (task / "demo_mc.yaml").write_text(TASK.format(data=data.name))
    (task / "utils.py").write_text(textwrap.dedent(UTILS))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        str(LMMS_PYTHON), "-m", "lmms_eval", "--model", "llava_cot",
        "--model_args", "strategy=stage_beam,candidates=2,judge=likelihood,seed=0",
        "--tasks", "demo_mc", "--include_path", str(task), "--output_path", str(tmp_path / "out"),
        "--batch_size", "3", "--log_samples",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1100, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    accuracy = json.loads(results.read_text())["results"]["demo_mc"]["accuracy,none"]
    (samples,) = (tmp_path / "out").rglob("*_samples_demo_mc.jsonl")
    logged = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(logged) == 3 and 0.0 <= accuracy <= 1.0
    assert all(str(sample["filtered_resps"]).strip() for sample in logged)  # an answer each
    print(f"\nlmms-eval, llava_cot stage_beam N=2 on 3 demo questions: accuracy {accuracy:.2f}")
