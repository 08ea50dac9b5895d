"""The model-neutral request: what it says about itself, its checks, its chat-template layout."""

import pytest

from langchain_llava_cot.conversation import Conversation, Turn, check_request, to_chat_messages

ADD = {"type": "function", "function": {"name": "add", "parameters": {}}}
MUL = {"type": "function", "function": {"name": "mul", "parameters": {}}}


def test_forced_tools_follow_tool_choice():
    turns = (Turn("user", "2 plus 3?"),)
    assert Conversation(turns, tools=(ADD, MUL)).forced_tools == ()
    assert Conversation(turns, tools=(ADD, MUL), tool_choice="auto").forced_tools == ()
    assert Conversation(turns, tools=(ADD, MUL), tool_choice="any").forced_tools == (ADD, MUL)
    assert Conversation(turns, tools=(ADD, MUL), tool_choice="mul").forced_tools == (MUL,)


def test_images_question_and_follow_up_turns():
    conversation = Conversation(
        (Turn("user", "first", (b"a",)), Turn("assistant", "ok"), Turn("user", "second", (b"b", b"c")))
    )
    assert conversation.images == (b"a", b"b", b"c") and conversation.question == "second"
    asked = conversation.with_user_turn("Which is larger?")
    assert asked.turns == (Turn("user", "Which is larger?", (b"a", b"b", b"c")),)


def test_the_fingerprint_changes_with_anything_the_model_reads():
    base = Conversation((Turn("user", "How many?", (b"picture",)),))
    assert base.fingerprint == Conversation((Turn("user", "How many?", (b"picture",)),)).fingerprint
    changed = [
        Conversation((Turn("user", "How many?", (b"other",)),)),
        Conversation((Turn("user", "How many ?", (b"picture",)),)),
        Conversation(base.turns, tools=(ADD,)),
        Conversation(base.turns, tools=(ADD,), tool_choice="add"),
        Conversation(base.turns, tools_prompt="You have tools."),
    ]
    assert len({base.fingerprint, *(c.fingerprint for c in changed)}) == 6


@pytest.mark.parametrize(
    ("turns", "says"),
    [
        ((Turn("system", "Be brief."),), "no user message"),
        ((Turn("user", "  "),), "last user message is empty"),
        ((Turn("user", "bad \ud800 text"),), "cannot be encoded as UTF-8"),
    ],
)
def test_requests_no_model_can_answer_are_refused(turns, says):
    with pytest.raises(ValueError, match=says):
        check_request(Conversation(turns))


def test_a_picture_alone_is_a_question():
    conversation = Conversation((Turn("user", "", (b"picture",)),))
    assert check_request(conversation) is conversation


def test_chat_messages_put_images_first_and_the_tools_prompt_in_the_system_turn():
    user = Turn("user", "How many?", (b"a", b"b"))
    with_system = Conversation((Turn("system", "Be brief."), user), tools_prompt="Tools: add.")
    assert to_chat_messages(with_system) == [
        {"role": "system", "content": [{"type": "text", "text": "Tools: add.\n\nBe brief."}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "How many?"}],
        },
    ]
    alone = Conversation((user,), tools_prompt="Tools: add.")
    assert to_chat_messages(alone)[0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Tools: add."}],
    }
    assert [m["role"] for m in to_chat_messages(alone, tools_in_template=True)] == ["user"]


def test_every_message_writer_shows_the_same_turns():
    """One layout: the tools prompt opens the system turn, the stage request replaces the question."""
    from langchain_llava_cot.backends.langchain import to_langchain_messages
    from langchain_llava_cot.backends.openai.asking import openai_messages

    conversation = Conversation(
        (Turn("system", "Be brief."), Turn("user", "How many?", (b"\x89PNG\r\n\x1a\npicture",))),
        tools_prompt="You can call add.",
        tools=(ADD,),
    )
    expected = [("system", "You can call add.\n\nBe brief."), ("user", "Write the caption.")]

    def text_of(content) -> str:
        if isinstance(content, str):
            return content
        return next(part["text"] for part in content if part["type"] == "text")

    asked = "Write the caption."
    openai = [(m["role"], text_of(m["content"])) for m in openai_messages(conversation, asked)]
    langchain = [
        (m.type.replace("human", "user"), text_of(m.content))
        for m in to_langchain_messages(conversation, asked)
    ]
    assert openai == langchain == expected
    template = to_chat_messages(conversation)
    assert [(m["role"], m["content"][-1]["text"]) for m in template] == [expected[0], ("user", "How many?")]
    assert [m["role"] for m in to_chat_messages(conversation, tools_in_template=True)] == ["system", "user"]
    assert to_chat_messages(conversation, tools_in_template=True)[0]["content"][-1]["text"] == "Be brief."
