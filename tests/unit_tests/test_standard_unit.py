"""LangChain's own unit test suite for chat models, run on ChatLlavaCoT."""

from fakes import ScriptedBackend
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_llava_cot.stages import Stage
from tests.standard_capabilities import ChatLlavaCoTCapabilities

BACKEND = ScriptedBackend(
    {
        Stage.SUMMARY: [" s </SUMMARY>"],
        Stage.CAPTION: [" c </CAPTION>"],
        Stage.REASONING: [" r </REASONING>"],
        Stage.CONCLUSION: [" answer </CONCLUSION>"],
    }
)


class TestChatLlavaCoTUnit(ChatLlavaCoTCapabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        return {"backend": BACKEND, "candidates": 2, "temperature": 0.5}
