"""The examples run end to end: multimodal RAG retrieves, cites, and shows the model its images."""

import base64
import io
import sys
from pathlib import Path

from langchain_core.documents import Document
from PIL import Image

from langchain_llava_cot import ChatLlavaCoT

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
sys.path.insert(0, str(Path(__file__).parents[1] / "unit_tests"))
from fakes import ScriptedBackend  # noqa: E402
from multimodal_rag import KeywordRetriever, build_chain  # noqa: E402

from langchain_llava_cot.stages import Stage  # noqa: E402

SCRIPT = {
    Stage.SUMMARY: [" look at the circle </SUMMARY>"],
    Stage.CAPTION: [" a red circle </CAPTION>"],
    Stage.REASONING: [" red means failed, per note-1 </REASONING>"],
    Stage.CONCLUSION: [" It failed inspection [img-red][note-1]. </CONCLUSION>"],
}


def png(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE = png("red"), png("blue")
STORE = [
    Document(
        id="img-red",
        page_content="photo of a red circle on a part",
        metadata={"image_base64": base64.b64encode(RED).decode()},
    ),
    Document(
        id="img-blue",
        page_content="photo of a blue square on a part",
        metadata={"image_base64": base64.b64encode(BLUE).decode()},
    ),
    Document(id="note-1", page_content="Inspection notes: a red circle marks a part that failed inspection."),
    Document(id="note-2", page_content="Shipping notes: blue crates leave on Monday."),
]


def test_keyword_retriever_ranks_by_the_question_words():
    retriever = KeywordRetriever(documents=STORE, k=2)
    assert [d.id for d in retriever.invoke("did the part with the red circle fail inspection?")] == [
        "note-1",
        "img-red",
    ]
    assert [d.id for d in retriever.invoke("when do blue crates ship")] == ["note-2", "img-blue"]
    assert retriever.invoke("zebra") == []


def test_keyword_retriever_ranks_with_rank_bm25(monkeypatch):
    import rank_bm25

    def reversed_scores(self, query):  # noqa: ANN001, ANN202
        return [float(i) for i in range(len(self.doc_len))]  # later documents score higher

    monkeypatch.setattr(rank_bm25.BM25Okapi, "get_scores", reversed_scores)
    found = KeywordRetriever(documents=STORE, k=2).invoke("did the part with the red circle fail inspection?")
    assert [d.id for d in found] == ["note-1", "img-blue"]  # still only documents sharing a word


def test_rag_chain_answers_from_retrieved_images_and_notes_and_cites_them():
    backend = ScriptedBackend(SCRIPT)
    llm = ChatLlavaCoT(backend=backend, strategy="greedy")
    chain = build_chain(llm, KeywordRetriever(documents=STORE, k=2))

    result = chain.invoke({"question": "Did the part with the red circle fail inspection?"})

    assert result["sources"] == ["note-1", "img-red"]
    assert result["answer"] == "It failed inspection [img-red][note-1]."
    assert set(result["sources"]) == set(__import__("re").findall(r"\[([\w-]+)\]", result["answer"]))
    conversation = backend.sample_calls[0][0].conversation
    assert conversation.images == (RED,)  # the retrieved image, and only it, reached the model
    assert (
        "[note-1] Inspection notes" in conversation.question and "[img-red] (image)" in conversation.question
    )
    assert "note-2" not in conversation.question


def test_rag_chain_runs_on_a_tiny_real_model(tiny_llava_path):
    llm = ChatLlavaCoT(model=str(tiny_llava_path), strategy="greedy", max_stage_tokens=4)
    result = build_chain(llm, KeywordRetriever(documents=STORE, k=3)).invoke(
        {"question": "what colour is the circle"}
    )
    assert sorted(result["sources"]) == ["img-red", "note-1"]  # the only documents about a circle
    assert isinstance(result["answer"], str)
    steps = result["message"].response_metadata["llava_cot"]["steps"]
    assert [s["stage"] for s in steps] == ["summary", "caption", "reasoning", "conclusion"]
