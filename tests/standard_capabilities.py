"""What ChatLlavaCoT declares to LangChain's standard test suites, unit and integration alike."""

from langchain_llava_cot import ChatLlavaCoT


class ChatLlavaCoTCapabilities:
    """Mixed in before ``ChatModelUnitTests`` / ``ChatModelIntegrationTests``."""

    @property
    def chat_model_class(self) -> type[ChatLlavaCoT]:
        return ChatLlavaCoT

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
