"""Transformers reward models as judges, in-process.

- :class:`RewardModelJudge` loads an ``AutoModelForSequenceClassification`` with one
  output, a scalar reward (reward models trained with TRL's ``RewardTrainer`` are of this
  kind), reads each candidate in its context as text
  (:func:`~langchain_llava_cot.judges.reward_text`: the question, then the answer so far
  with the candidate in its stage's tags) and scores the candidates in batched forward
  passes.
- :class:`ImageRewardModelJudge` loads an image-text model with a score head (the model
  without its language-model head, and a ``score`` layer over its last hidden state, as
  a ``*ForSequenceClassification`` has), and reads each candidate *with the picture*: the
  conversation in the model's chat template, then the answer so far as the assistant's
  turn, the way vLLM's pooling API renders it (:class:`~langchain_llava_cot.judges.ServedRewardJudge`
  with ``images=True``). Candidates go through in batched forward passes.

A text reward model cannot see the picture: judge the stages that need it another way,
with :class:`~langchain_llava_cot.judges.StageJudges` (:func:`text_reward_judge`).

Example::

    judge = RewardModelJudge("path/to/reward-model")
    llm = ChatLlavaCoT(strategy="retrace", judge=judge)
    llm = ChatLlavaCoT(strategy="best_of_n", judge=ImageRewardModelJudge("path/to/vlm-reward-model"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_llava_cot.conversation import to_chat_messages
from langchain_llava_cot.images import decode_image
from langchain_llava_cot.judges import JudgeTask, ScoreJudge, StageJudges, answer_text, reward_text
from langchain_llava_cot.judges.served import label_log_odds

__all__ = ["ImageRewardModelJudge", "RewardModelJudge", "load_score_head", "text_reward_judge"]


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
        from langchain_llava_cot.checks import whole_number

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
        """Each candidate's reward (:func:`~langchain_llava_cot.judges.reward_text`)."""
        return self.read([reward_text(task, i) for i in range(len(task.candidates))])

    def read(self, texts: list[str]) -> list[float]:
        """The reward of each text, in batches of ``batch_size``; identical texts are read once."""
        import torch

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


class ImageRewardModelJudge(ScoreJudge):
    """Score candidates with an image-text reward model: a VLM with a score head, the picture in its input."""

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 8,
        positive_label: int = 1,
    ) -> None:
        """Load the model, its processor and its score head from a local folder.

        Args:
            model: A folder holding an image-text model (``AutoModel`` loads it without its
                language-model head) whose weights include a ``score`` layer
                (``score.weight``, or ``language_model.score.weight`` as vLLM names it), and
                its processor.
            device: Where the model runs.
            batch_size: Candidates per forward pass.
            positive_label: With several labels, the one whose log-odds is the score.
        """
        import transformers

        folder = str(model)
        self.processor = transformers.AutoProcessor.from_pretrained(folder)
        self.model = transformers.AutoModel.from_pretrained(folder).to(device).eval()
        self.head = load_score_head(folder).to(device=device, dtype=self.model.dtype)
        self.batch_size, self.positive_label, self.source = batch_size, positive_label, folder
        super().__init__(self.rewards, name="image_reward_model")

    def rewards(self, task: JudgeTask) -> list[float]:
        """Each candidate's reward, read with the picture; identical candidates are read once."""
        import torch

        distinct = list(dict.fromkeys(task.candidates))
        first = [task.candidates.index(text) for text in distinct]
        found: dict[str, float] = {}
        with torch.inference_mode():
            for start in range(0, len(distinct), self.batch_size):
                chunk = first[start : start + self.batch_size]
                found.update(zip(distinct[start : start + self.batch_size], self._read(task, chunk)))
        return [found[text] for text in task.candidates]

    def text_of(self, task: JudgeTask, index: int) -> str:
        """Candidate ``index`` as the model reads it: the chat-templated conversation, the answer so far."""
        messages = to_chat_messages(task.conversation)
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": answer_text(task, index)}]}
        )
        return self.processor.apply_chat_template(messages, tokenize=False)

    def _read(self, task: JudgeTask, indices: list[int]) -> list[float]:
        pictures = [decode_image(image) for image in task.conversation.images]
        texts = [self.text_of(task, i) for i in indices]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if pictures:
            kwargs["images"] = [pictures] * len(texts)
        inputs = self.processor(**kwargs, add_special_tokens=False, padding_side="left")
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        hidden = self.model(**inputs).last_hidden_state[:, -1]  # left padding: the last token is real
        logits = self.head(hidden).float().tolist()
        return [label_log_odds(row, self.positive_label, self.source) for row in logits]


def load_score_head(folder: str | Path) -> Any:
    """The ``score`` layer of a reward model's weights, as a ``torch.nn.Linear``.

    The weights hold exactly one tensor named ``score.weight`` (transformers'
    ``*ForSequenceClassification``) or ending in ``.score.weight`` (vLLM's naming for a
    converted model, ``language_model.score.weight``), and its bias when there is one.
    """
    import torch
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    weights: dict[str, Any] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as opened:
            for key in opened.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key == "score.weight" or key.endswith(".score.weight"):
                    weights[key] = opened.get_tensor(key)
                    bias = key.removesuffix("weight") + "bias"
                    if bias in opened.keys():  # noqa: SIM118
                        weights[bias] = opened.get_tensor(bias)
    heads = [key for key in weights if key.endswith("weight")]
    if len(heads) != 1:
        msg = (
            f"{folder} holds {len(heads)} score heads ({heads}); an image reward model's weights need one "
            "'score.weight' (num_labels x hidden size), as transformers' *ForSequenceClassification saves it."
        )
        raise ValueError(msg)
    weight = weights[heads[0]]
    bias = weights.get(heads[0].removesuffix("weight") + "bias")
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    return head.requires_grad_(False).eval()


def text_reward_judge(reward_model: str | Path | RewardModelJudge) -> StageJudges:
    """A text reward model for the stages it can read; likelihood for summary and caption.

    A text reward model reads reasoning, conclusions and whole answers as well as any
    judge, but it cannot see the picture that summaries and captions describe.
    """
    judge = reward_model if isinstance(reward_model, RewardModelJudge) else RewardModelJudge(reward_model)
    return StageJudges({"summary": "likelihood", "caption": "likelihood"}, default=judge, name="reward")
