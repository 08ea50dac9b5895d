"""LangChain's own unit test suite for chat models, run on ChatLlavaCoT."""

from fakes import ScriptedBackend
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.stages import Stage

BACKEND = ScriptedBackend(
    {
        Stage.SUMMARY: [" s </SUMMARY>"],
        Stage.CAPTION: [" c </CAPTION>"],
        Stage.REASONING: [" r </REASONING>"],
        Stage.CONCLUSION: [" answer </CONCLUSION>"],
    }
)


class TestChatLlavaCoTUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLlavaCoT]:
        return ChatLlavaCoT

    @property
    def chat_model_params(self) -> dict:
        return {"backend": BACKEND, "candidates": 2, "temperature": 0.5}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True
