"""TransformersBackend on tiny random LLaVA, Mllama and Idefics3 models built offline."""

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from langchain_core.messages import HumanMessage
from transformers import AutoModelForImageTextToText, AutoProcessor

from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.backends.transformers import TransformersBackend
from langchain_llava_cot.conversation import Conversation, Turn, to_chat_messages
from langchain_llava_cot.images import decode_image
from tests.integration_tests.pictures import BLUE_SQUARE, RED_CIRCLE, TEXT_ONLY, png


@pytest.fixture(scope="module")
def backend(tiny_vlm_path: Path) -> TransformersBackend:
    return TransformersBackend(tiny_vlm_path)


def _greedy(conversation: Conversation, **kwargs) -> SampleRequest:
    return SampleRequest(
        conversation, prefix="<SUMMARY>", max_new_tokens=kwargs.pop("max_new_tokens", 16), **kwargs
    )


def _texts(results) -> list[list[str]]:
    return [[sample.text for sample in samples] for samples in results]


def test_loads_with_name_and_choice_support(backend: TransformersBackend, tiny_vlm_path: Path) -> None:
    assert backend.model_name == str(tiny_vlm_path)
    assert backend.supports_choice is True


def test_greedy_is_deterministic_and_well_formed(backend: TransformersBackend) -> None:
    [first] = backend.sample([_greedy(RED_CIRCLE)])
    [second] = backend.sample([_greedy(RED_CIRCLE)])
    assert first == second
    [sample] = first
    assert sample.finish_reason in ("stop", "length")
    assert sample.prompt_tokens > 0
    assert 0 < sample.completion_tokens <= 16
    assert len(sample.token_logprobs) == sample.completion_tokens
    assert all(math.isfinite(lp) and lp <= 0 for lp in sample.token_logprobs)


def test_batched_greedy_matches_unbatched(backend: TransformersBackend) -> None:
    requests = [_greedy(RED_CIRCLE), _greedy(BLUE_SQUARE, max_new_tokens=10)]
    batched = backend.sample(requests)
    alone = [backend.sample([request])[0] for request in requests]
    assert _texts(batched) == _texts(alone)
    for [together], [single] in zip(batched, alone):
        assert together.prompt_tokens == single.prompt_tokens
        assert together.token_logprobs == pytest.approx(single.token_logprobs, abs=1e-4)
    assert batched[1][0].completion_tokens <= 10


def test_n_candidates_come_from_one_generate_call(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    generate = backend._model.generate

    def counting_generate(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    monkeypatch.setattr(backend._model, "generate", counting_generate)
    sampled = SampleRequest(
        RED_CIRCLE, prefix="<SUMMARY>", n=3, temperature=1.0, top_p=0.95, seed=7, max_new_tokens=12
    )
    other = SampleRequest(
        BLUE_SQUARE, prefix="<SUMMARY>", n=2, temperature=1.0, top_p=0.95, seed=7, max_new_tokens=8
    )
    results = backend.sample([sampled, other])
    assert calls == [5]
    assert [len(samples) for samples in results] == [3, 2]
    assert len({s.text for s in results[0]}) > 1  # sampled, not greedy
    assert _texts(backend.sample([sampled, other])) == _texts(results)  # seeded: reproducible
    unseeded = SampleRequest(TEXT_ONLY, prefix="", n=2, temperature=1.0, max_new_tokens=8)
    assert _texts(backend.sample([unseeded])) != _texts(backend.sample([unseeded]))


def test_sampling_draws_from_the_whole_vocabulary(backend: TransformersBackend) -> None:
    """No top-k cut-off slips in from transformers' defaults (top_k=50) when none is asked for."""
    request = SampleRequest(TEXT_ONLY, prefix="", n=256, temperature=5.0, seed=0, max_new_tokens=1)
    [samples] = backend.sample([request])
    assert len({s.text for s in samples}) > 50


def test_stop_string_cuts_text_and_tokens(backend: TransformersBackend) -> None:
    [[full]] = backend.sample([_greedy(RED_CIRCLE, max_new_tokens=24)])
    stop = next(full.text[i : i + 2] for i in range(4, len(full.text) - 2) if full.text[i : i + 2].isascii())
    [[cut]] = backend.sample([_greedy(RED_CIRCLE, max_new_tokens=24, stop=("\x00never", stop))])
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens <= full.completion_tokens
    assert cut.token_logprobs == pytest.approx(full.token_logprobs[: cut.completion_tokens], abs=1e-4)


def test_single_token_stops_end_rows_by_token_id(backend: TransformersBackend) -> None:

    tokenizer = backend._prompts.tokenizer
    tag = tokenizer.convert_tokens_to_ids("</CAPTION>")
    text_ids = tokenizer.encode(" red circle", add_special_tokens=False)
    rows = [
        SampleRequest(RED_CIRCLE, "<CAPTION>", stop=("</CAPTION>",), max_new_tokens=50),
        SampleRequest(
            RED_CIRCLE, "<CAPTION>", stop=("circle",), max_new_tokens=50
        ),  # several tokens: decoded
        SampleRequest(RED_CIRCLE, "<CAPTION>", stop=("</CAPTION>",), max_new_tokens=50),
    ]
    stops = backend._decoder.stops(2, rows)
    step = torch.tensor([[9, 9, *text_ids[:-1], tag]] * 3)
    assert backend._decoder.single_token_id("</CAPTION>") == tag
    assert backend._decoder.single_token_id("circle") is None
    step[1, 2:] = torch.tensor(text_ids)
    step[2, -1] = text_ids[-1]
    assert stops(step, None).tolist() == [True, True, False]


def test_choose_matches_a_plain_forward_pass(backend: TransformersBackend, tiny_vlm_path: Path) -> None:
    prefix, options = "<SUMMARY> Count. </SUMMARY> The better response is", (" 1", " 2")
    results = backend.choose(
        [ChoiceRequest(RED_CIRCLE, prefix, options), ChoiceRequest(TEXT_ONLY, prefix, options)]
    )
    assert len(results) == 2
    for result in results:
        assert len(result.logprobs) == 2
        assert all(math.isfinite(lp) and lp <= 0 for lp in result.logprobs)
        assert result.prompt_tokens > 0

    processor = AutoProcessor.from_pretrained(tiny_vlm_path)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_path)
    for index, option in enumerate(options):
        text = processor.apply_chat_template(
            to_chat_messages(RED_CIRCLE), add_generation_prompt=True, tokenize=False
        )
        inputs = processor(
            text=[text + prefix + option],
            images=[[decode_image(RED_CIRCLE.images[0])]],
            add_special_tokens=False,
            return_tensors="pt",
        )
        with torch.inference_mode():
            logits = model(**inputs).logits[0]
        expected = torch.log_softmax(logits[-2].float(), dim=-1)[inputs["input_ids"][0, -1]]
        assert results[0].logprobs[index] == pytest.approx(float(expected), abs=1e-4)


def test_choose_scores_multi_token_options(backend: TransformersBackend) -> None:
    [result] = backend.choose([ChoiceRequest(RED_CIRCLE, "The answer is", (" 1", " triangles and circles"))])
    single, several = result.logprobs
    [[alone]] = [backend.choose([ChoiceRequest(RED_CIRCLE, "The answer is", (" 1",))])[0].logprobs]
    assert single == pytest.approx(alone, abs=1e-4)
    assert math.isfinite(several) and several < single


def test_text_only_conversation(backend: TransformersBackend) -> None:
    [[sample]] = backend.sample([_greedy(TEXT_ONLY)])
    assert sample.completion_tokens > 0
    mixed = backend.sample([_greedy(TEXT_ONLY), _greedy(RED_CIRCLE)])
    assert mixed[0][0].text == sample.text


def test_threads_give_sequential_results(backend: TransformersBackend) -> None:
    requests = [_greedy(c, max_new_tokens=8) for c in (RED_CIRCLE, BLUE_SQUARE, TEXT_ONLY, RED_CIRCLE)]
    choice = ChoiceRequest(BLUE_SQUARE, "The better response is", (" 1", " 2"))
    sequential = [backend.sample([r]) for r in requests], backend.choose([choice])
    with ThreadPoolExecutor(max_workers=4) as pool:
        samples = list(pool.map(lambda r: backend.sample([r]), requests))
        choices = pool.submit(backend.choose, [choice]).result()
    assert [_texts(s) for s in samples] == [_texts(s) for s in sequential[0]]
    assert choices[0].logprobs == pytest.approx(sequential[1][0].logprobs, abs=1e-5)


async def test_async_calls_run_concurrently(backend: TransformersBackend) -> None:
    requests = [_greedy(RED_CIRCLE, max_new_tokens=6), _greedy(TEXT_ONLY, max_new_tokens=6)]
    results = await asyncio.gather(*(backend.asample([r]) for r in requests))
    assert [_texts(r) for r in results] == [_texts(backend.sample([r])) for r in requests]


def test_bad_input_leaves_the_model_usable(backend: TransformersBackend) -> None:
    [[before]] = backend.sample([_greedy(RED_CIRCLE, max_new_tokens=6)])
    broken = Conversation((Turn("user", "What is this?", (b"not an image",)),))
    with pytest.raises(Exception):  # noqa: B017 - whatever PIL raises
        backend.sample([_greedy(broken)])
    with pytest.raises(ValueError, match="n must be at least 1"):
        backend.sample([SampleRequest(RED_CIRCLE, prefix="", n=0)])
    with pytest.raises(ValueError, match="at least one option"):
        backend.choose([ChoiceRequest(RED_CIRCLE, prefix="", options=())])
    [[after]] = backend.sample([_greedy(RED_CIRCLE, max_new_tokens=6)])
    assert after == before


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TransformersBackend(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TransformersBackend("./no/such/model")


def test_text_only_model_is_rejected_before_loading(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a vision-language model"):
        TransformersBackend(tmp_path)


def test_hub_id_not_available_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="not a local folder"):
        TransformersBackend("nobody-xyz/no-such-vlm")


def test_tools_go_through_the_chat_template_when_it_has_a_tool_format(tiny_llava_path: Path) -> None:
    from langchain_llava_cot.tools import render_tools_prompt

    tools = ({"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {}}},)
    conversation = Conversation(
        (Turn("user", "How many?", (png("red"),)),), tools_prompt=render_tools_prompt(tools), tools=tools
    )
    plain = TransformersBackend(tiny_llava_path)
    assert "You can call these tools" in plain._prompts.render(conversation, "<SUMMARY>")

    with_tool_format = TransformersBackend(tiny_llava_path)
    template = with_tool_format._prompts.processor.chat_template
    with_tool_format._prompts.processor.chat_template = (
        "{% if tools %}TOOLS {{ tools | tojson }}\n{% endif %}" + template
    )
    prompt = with_tool_format._prompts.render(conversation, "<SUMMARY>")
    assert prompt.startswith('TOOLS [{"type": "function"') and "You can call these tools" not in prompt


def test_a_prompt_longer_than_the_context_fails_before_any_model_work(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_generate(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(backend._model, "generate", no_generate)
    limit = backend.context_length
    assert limit is not None and limit > 0
    long = Conversation((Turn("user", "How many circles? " * limit, (png("red"),)),))
    with pytest.raises(ValueError, match=rf"about [\d,]+ tokens, but the model reads at most {limit:,}"):
        backend.sample([_greedy(long)])
    with pytest.raises(ValueError, match="shorten"):
        backend.choose([ChoiceRequest(long, prefix="The better response is")])


def test_our_calls_raise_no_future_warning_from_transformers(tiny_vlm_path: Path) -> None:
    """KV caches go to transformers under the name it takes (``cache`` from 5.24)."""
    import warnings

    from langchain_llava_cot import ChatLlavaCoT

    llm = ChatLlavaCoT(model=str(tiny_vlm_path), candidates=2, seed=0, max_stage_tokens=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        message = llm.invoke([HumanMessage(content="How many circles?")])
    assert message.response_metadata["llava_cot"]["steps"]


def test_a_request_with_no_room_for_an_answer_fails_before_the_first_token(
    tiny_llava_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty pictures, or stage limits beyond the context, fail at once, not after three stages."""
    from langchain_llava_cot import ChatLlavaCoT
    from langchain_llava_cot.images import image_message

    llm = ChatLlavaCoT(model=str(tiny_llava_path), strategy="greedy")
    backend = llm.get_backend()
    calls: list[object] = []
    monkeypatch.setattr(backend, "sample", lambda requests: calls.append(requests))
    block = image_message(png("red"), "?").content[0]
    many = HumanMessage(content=[block] * 50 + [{"type": "text", "text": "How many red circles?"}])
    with pytest.raises(ValueError, match="fewer than one per stage"):
        llm.invoke([many])
    one = image_message(png("red"), "How many red circles?")
    with pytest.raises(ValueError, match=r"answer may take 4,096 tokens .* but only [\d,]+ fit"):
        llm.invoke([one], max_stage_tokens=1024)
    assert calls == []


def test_a_long_question_gets_the_room_its_context_leaves(tiny_llava_path: Path) -> None:
    """With the default stage limits, the answer's budget is what the context leaves after the prompt."""
    from langchain_llava_cot import ChatLlavaCoT

    llm = ChatLlavaCoT(model=str(tiny_llava_path), strategy="greedy")
    backend = llm.get_backend()
    limit = backend.context_length
    assert limit is not None
    question = "How many circles? " * (limit // 12)
    room = backend.tokens_left(Conversation((Turn("user", question),)), "")
    assert room is not None and 100 < room < 1152  # less than the stages' default limits (1,152)
    message = llm.invoke([HumanMessage(question)])
    spent = message.usage_metadata["output_tokens"]
    assert 0 < spent <= room
