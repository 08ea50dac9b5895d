import asyncio
import base64
import io

import pytest
from fakes import ScriptedBackend
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from PIL import Image

from langchain_llava_cot import ChatLlavaCoT, ImageError, convert_messages
from langchain_llava_cot.images import image_message
from langchain_llava_cot.stages import Stage

SCRIPT = {
    Stage.SUMMARY: [" count the red circles </SUMMARY>"],
    Stage.CAPTION: [" two red circles </CAPTION>", " three red circles </CAPTION>"],
    Stage.REASONING: [" the caption lists three </REASONING>"],
    Stage.CONCLUSION: [" 3 </CONCLUSION>"],
}


def png_bytes(size=(8, 8), color="red"):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()


def gradient_png():
    buffer = io.BytesIO()
    Image.frombytes("L", (64, 64), bytes(range(256)) * 16).save(buffer, format="PNG")
    return buffer.getvalue()


NOISE_PNG = gradient_png()
B64 = base64.b64encode(PNG).decode()


def image_block(data):
    return {"type": "image", "base64": base64.b64encode(data).decode(), "mime_type": "image/png"}


def question(*blocks):
    return [HumanMessage(content=[*blocks, {"type": "text", "text": "How many red circles?"}])]


def llm(**options):
    backend = ScriptedBackend(SCRIPT, prefer=lambda t: t.count("three"))
    return ChatLlavaCoT(backend=backend, candidates=2, seed=0, **{"judge": "pairwise", **options})


def test_invoke_returns_conclusion_reasoning_usage_and_search_record():
    msg = llm().invoke(question({"type": "image", "base64": B64, "mime_type": "image/png"}))
    assert msg.content == "3"
    assert msg.content_blocks[0] == {
        "type": "reasoning",
        "reasoning": "<SUMMARY> count the red circles </SUMMARY>\n\n"
        "<CAPTION> three red circles </CAPTION>\n\n"
        "<REASONING> the caption lists three </REASONING>\n\n",
    }
    assert (
        msg.usage_metadata["total_tokens"]
        == msg.usage_metadata["input_tokens"] + msg.usage_metadata["output_tokens"]
        > 0
    )
    meta = msg.response_metadata
    assert meta["model_name"] == "scripted" and meta["finish_reason"] == "stop"
    record = meta["llava_cot"]
    assert [s["stage"] for s in record["steps"]] == ["summary", "caption", "reasoning", "conclusion"]
    assert record["chosen"]["caption"] == "three red circles"
    assert record["answer"].startswith("<SUMMARY> count the red circles </SUMMARY>")


def test_v1_output_shows_reasoning_as_a_standard_block():
    msg = llm(output_version="v1").invoke(question())
    assert [b["type"] for b in msg.content] == ["reasoning", "text"]


def test_return_tagged_text_gives_the_whole_answer():
    msg = llm(return_tagged_text=True).invoke(question())
    assert msg.content.startswith("<SUMMARY>") and msg.content.endswith("<CONCLUSION> 3 </CONCLUSION>")


def test_stream_yields_each_stage_as_it_is_chosen_then_the_conclusion():
    chunks = list(llm().stream(question()))
    reasoning = [c.additional_kwargs.get("reasoning_content") for c in chunks]
    assert reasoning[:3] == [
        "<SUMMARY> count the red circles </SUMMARY>\n\n",
        "<CAPTION> three red circles </CAPTION>\n\n",
        "<REASONING> the caption lists three </REASONING>\n\n",
    ]
    assert chunks[3].content == "3"
    assert any(c.usage_metadata for c in chunks)
    assert any("llava_cot" in c.response_metadata for c in chunks)


def test_async_invoke_stream_and_batch():
    model = llm()

    async def go():
        msg = await model.ainvoke(question())
        chunks = [c async for c in model.astream(question())]
        many = await model.abatch([question(), question()])
        return msg, chunks, many

    msg, chunks, many = asyncio.run(go())
    assert msg.content == "3" and "".join(c.content for c in chunks) == "3"
    assert [m.content for m in many] == ["3", "3"]
    assert [m.content for m in model.batch([question(), question()])] == ["3", "3"]


def test_invoke_options_override_the_model_options():
    model = llm()
    msg = model.invoke(question(), strategy="greedy")
    assert msg.response_metadata["llava_cot"]["strategy"] == "greedy"
    assert all(len(s["candidates"]) == 1 for s in msg.response_metadata["llava_cot"]["steps"])
    with pytest.raises(TypeError, match="Unknown option"):
        model.invoke(question(), beam_width=3)


def test_stop_reaches_the_conclusion_step():
    model = llm()
    model.invoke(question(), stop=["Observation:"])
    assert model.backend.sample_calls[-1][0].stop == ("</CONCLUSION>", "Observation:")


def test_langsmith_params():
    params = llm(max_tokens=100)._get_ls_params(stop=["x"])
    assert params == {
        "ls_provider": "llava_cot",
        "ls_model_name": "scripted",
        "ls_model_type": "chat",
        "ls_temperature": 0.6,
        "ls_max_tokens": 100,
        "ls_stop": ["x"],
    }


# -- message conversion ------------------------------------------------------------


def test_image_message_labels_the_image_and_round_trips():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    message = image_message(jpeg, "What colour?")
    assert message.content[0]["mime_type"] == "image/jpeg"
    conversation = convert_messages([message])
    assert conversation.images == (jpeg,)
    assert conversation.question == "What colour?"
    with pytest.raises(ImageError):  # not an image: refused when read, not when the message is built
        convert_messages([image_message(b"not an image", "What colour?")])


def test_image_message_reads_a_path_and_names_what_it_takes(tmp_path):
    path = tmp_path / "blue.png"
    Image.new("RGB", (8, 8), "blue").save(path)
    assert convert_messages([image_message(path, "What colour?")]).images == (path.read_bytes(),)
    with pytest.raises(TypeError, match="bytes or a Path"):
        image_message(str(path), "What colour?")


def test_base64_jpeg_blocks_are_not_taken_for_paths():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, format="JPEG")
    data = base64.b64encode(buffer.getvalue()).decode()
    assert data.startswith("/")  # as every JPEG's base64 does
    blocks = (
        {"type": "image", "base64": data, "mime_type": "image/jpeg"},
        {"type": "image", "source_type": "base64", "data": data, "mime_type": "image/jpeg"},
    )
    assert convert_messages(question(*blocks)).images == (buffer.getvalue(),) * 2


def test_image_blocks_in_every_supported_form_are_read():
    data_url = f"data:image/png;base64,{B64}"
    conversation = convert_messages(
        [
            SystemMessage("Be brief."),
            *question(
                {"type": "image", "base64": B64, "mime_type": "image/png"},
                {"type": "image", "url": data_url},
                {"type": "image_url", "image_url": {"url": data_url}},
                {"type": "image", "source_type": "base64", "data": B64, "mime_type": "image/png"},
            ),
        ]
    )
    assert conversation.images == (PNG,) * 4
    assert [t.role for t in conversation.turns] == ["system", "user"]
    assert conversation.question == "How many red circles?"


def test_history_and_tool_results_become_turns():
    conversation = convert_messages(
        [
            HumanMessage("hi"),
            AIMessage("hello"),
            ToolMessage("4", tool_call_id="c1", name="count"),
            HumanMessage("so?"),
        ]
    )
    assert [t.role for t in conversation.turns] == ["user", "assistant", "user", "user"]
    assert conversation.turns[2].text == "Tool result (count): 4"


def test_local_image_paths_only_when_turned_on(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(PNG)
    block = {"type": "image", "url": str(path)}
    with pytest.raises(ImageError, match="allow_local_images=True"):
        convert_messages(question(block))
    assert convert_messages(question(block), allow_local_images=True).images == (PNG,)
    with pytest.raises(ImageError, match="does not exist"):
        convert_messages(
            question({"type": "image", "url": str(tmp_path / "nope.png")}), allow_local_images=True
        )


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (image_block(b"not an image"), "not a readable image"),
        (image_block(NOISE_PNG[: len(NOISE_PNG) // 2]), "truncated or corrupt"),
        ({"type": "image", "base64": "%%%not-base64%%%", "mime_type": "image/png"}, "not valid base64"),
        ({"type": "image", "url": "https://example.com/cat.png"}, "not fetched"),
        ({"type": "image"}, "has no image data"),
        ({"type": "audio", "base64": "AAAA"}, "Unsupported content block of type 'audio'"),
    ],
)
def test_bad_image_input_is_rejected_before_any_model_work(block, message):
    model = llm()
    with pytest.raises(ValueError, match=message):
        model.invoke(question(block))
    assert model.backend.sample_calls == []


def test_decompression_bomb_is_rejected():
    big = png_bytes(size=(4000, 3000))
    with pytest.raises(ImageError, match="decompression bomb"):
        convert_messages(question(image_block(big)), max_image_pixels=1_000_000)


def test_empty_message_list():
    with pytest.raises(ValueError, match="No messages"):
        llm().invoke([])


def test_unsupported_message_type():
    from langchain_core.messages import ChatMessage

    with pytest.raises(TypeError, match="Unsupported message type ChatMessage"):
        convert_messages([ChatMessage(role="critic", content="hm")])


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"candidates": 0}, ValueError, "candidates must be"),
        ({"strategy": "mcts"}, ValueError, "strategy"),
        ({"model": "/no/such/model"}, ValueError, "does not exist"),
        ({"beam": 3}, ValueError, "Extra inputs are not permitted"),
        ({"judge": "oracle"}, ValueError, "Unknown judge"),
        ({"candidates": 1000}, ValueError, "above the cap of 64"),
        ({"candidates": True}, ValueError, "candidates must be a whole number of at least 1, got True"),
        ({"temperature": -1}, ValueError, "temperature must be at least 0"),
        ({"top_p": 2}, ValueError, "top_p must be above 0.0 and at most 1.0"),
        ({"timeout": float("inf")}, ValueError, "timeout must be a finite number"),
        ({"timeout": float("nan")}, ValueError, "timeout must be a finite number"),
        ({"timeout": 0}, ValueError, "timeout must be above 0.0"),
        ({"max_stage_tokens": {"caption": -5}}, ValueError, "must be a whole number of at least 1"),
    ],
)
def test_bad_options_fail_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        ChatLlavaCoT(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -1}, "temperature must be at least 0"),
        ({"candidates": 1000}, "above the cap"),
        ({"model": "other"}, "model cannot change per call"),
        ({"base_url": "http://127.0.0.1:1/v1", "model": "m"}, "base_url, model cannot change per call"),
    ],
)
def test_bad_per_call_options_fail_before_any_model_work(options, message):
    backend = ScriptedBackend(SCRIPT)
    llm = ChatLlavaCoT(backend=backend)
    with pytest.raises((ValueError, TypeError), match=message):
        llm.invoke([HumanMessage("How many?")], **options)
    assert not backend.sample_calls


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([SystemMessage("Be brief.")], "no user message"),
        ([HumanMessage("   ")], "last user message is empty"),
        ([HumanMessage("How many \ud800 squares?")], "cannot be encoded as UTF-8"),
    ],
)
def test_requests_no_model_can_answer_fail_before_any_model_work(messages, message):
    backend = ScriptedBackend(SCRIPT)
    with pytest.raises(ValueError, match=message):
        ChatLlavaCoT(backend=backend).invoke(messages)
    assert not backend.sample_calls


def test_tools_prompt_opens_the_system_turn_unless_the_template_renders_tools():
    from dataclasses import replace

    from langchain_llava_cot.conversation import to_chat_messages

    conversation = replace(
        convert_messages([SystemMessage("Be brief."), HumanMessage("hi")]), tools_prompt="TOOLS"
    )
    assert to_chat_messages(conversation)[0]["content"][-1]["text"] == "TOOLS\n\nBe brief."
    assert to_chat_messages(conversation, tools_in_template=True)[0]["content"][-1]["text"] == "Be brief."
