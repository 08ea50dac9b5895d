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
