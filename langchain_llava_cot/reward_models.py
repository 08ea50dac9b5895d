"""A transformers reward model as a judge.

:class:`RewardModelJudge` loads an ``AutoModelForSequenceClassification`` with one
output, a scalar reward (reward models trained with TRL's ``RewardTrainer`` are of this
kind), reads each candidate in its context as text
(:func:`~langchain_llava_cot.judges.reward_text`: the question, then the answer so far
with the candidate in its stage's tags) and scores the candidates in batched forward
passes. A reward model that needs the picture is a
:class:`~langchain_llava_cot.judges.ScoreJudge` around your own function.

A text reward model cannot see the picture: judge the stages that need it another way,
with :class:`~langchain_llava_cot.judges.StageJudges` (:func:`text_reward_judge`).

Example::

    judge = RewardModelJudge("path/to/reward-model")
    llm = ChatLlavaCoT(strategy="retrace", judge=judge)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_llava_cot.judges import JudgeTask, ScoreJudge, StageJudges, reward_text

__all__ = ["RewardModelJudge", "text_reward_judge"]


class RewardModelJudge(ScoreJudge):
    """Score candidates with a sequence-classification reward model (one output per text)."""

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any = None,
        *,
        device: str = "cpu",
        max_length: int = 2048,
        batch_size: int = 16,
        allow_pickle: bool = False,
    ) -> None:
        """Load the reward model, or wrap a loaded one.

        Args:
            model: A local folder of the reward model, or a loaded
                ``AutoModelForSequenceClassification`` (then pass its ``tokenizer`` too).
            tokenizer: Its tokenizer; None loads the folder's.
            device: Where a folder's model runs.
            max_length: Longest text read, in tokens, and never more than the model's
                positions; longer ones lose their beginning, so the candidate, which comes
                last, is always read.
            batch_size: Texts per forward pass.
            allow_pickle: Also load weights saved as pickle (``pytorch_model.bin``), which
                can run code when read; off: safetensors only.
        """
        from langchain_llava_cot.options import whole_number

        whole_number("max_length", max_length, low=1)
        whole_number("batch_size", batch_size, low=1)
        if isinstance(model, (str, Path)):
            model, tokenizer = _load(model, tokenizer, device=device, allow_pickle=allow_pickle)
        elif tokenizer is None:
            msg = "A loaded reward model needs its tokenizer: RewardModelJudge(model, tokenizer)."
            raise ValueError(msg)
        if model.config.num_labels != 1:
            msg = (
                f"A reward model has one output (a scalar reward); this one has {model.config.num_labels} "
                "labels. Load a reward model, or wrap your own scoring in ScoreJudge."
            )
            raise ValueError(msg)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval(), tokenizer
        positions = _positions(model.config)
        self.max_length = min(max_length, positions) if positions else max_length
        self.batch_size = batch_size
        super().__init__(self.rewards, name="reward_model")

    def rewards(self, task: JudgeTask) -> list[float]:
        """Each candidate's reward; identical texts are read once."""
        import torch

        texts = [reward_text(task, i) for i in range(len(task.candidates))]
        distinct = list(dict.fromkeys(texts))
        found: dict[str, float] = {}
        with torch.inference_mode():
            for start in range(0, len(distinct), self.batch_size):
                chunk = distinct[start : start + self.batch_size]
                found.update(zip(chunk, self._read(chunk)))
        return [found[text] for text in texts]

    def _read(self, texts: list[str]) -> list[float]:
        side = self.tokenizer.truncation_side
        self.tokenizer.truncation_side = "left"  # keep the candidate, which comes last
        try:
            encoded = self.tokenizer(
                texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            )
        finally:
            self.tokenizer.truncation_side = side
        logits = self.model(**encoded.to(self.model.device)).logits
        return logits[:, 0].float().tolist()


def _load(model: str | Path, tokenizer: Any, *, device: str, allow_pickle: bool) -> tuple[Any, Any]:
    """A reward model and its tokenizer from a folder (or a hub id); safetensors only unless allowed."""
    import transformers

    from langchain_llava_cot.backends.transformers.loading import resolve_source

    source = resolve_source(model)  # a missing folder fails here, saying so
    folder = Path(source)
    if not allow_pickle and folder.is_dir() and not any(folder.glob("*.safetensors")):
        msg = (
            f"Reward model folder {source!r} has no .safetensors weights. RewardModelJudge loads "
            "safetensors only, since pickled weights (pytorch_model.bin) can run code when read: "
            "save the model with save_pretrained (safetensors by default), or pass allow_pickle=True "
            "if you trust the file."
        )
        raise ValueError(msg)
    tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(source)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(
        source, use_safetensors=None if allow_pickle else True
    )
    return loaded.to(device), tokenizer


def _positions(config: Any) -> int | None:
    """The most tokens the model reads, when its config says."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def text_reward_judge(reward_model: str | Path | RewardModelJudge) -> StageJudges:
    """A text reward model for the stages it can read; likelihood for summary and caption.

    A text reward model reads reasoning, conclusions and whole answers as well as any
    judge, but it cannot see the picture that summaries and captions describe.
    """
    judge = reward_model if isinstance(reward_model, RewardModelJudge) else RewardModelJudge(reward_model)
    return StageJudges({"summary": "likelihood", "caption": "likelihood"}, default=judge, name="reward")
