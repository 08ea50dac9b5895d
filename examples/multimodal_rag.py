"""Multimodal RAG: retrieve images and notes from a local store, answer with ChatLlavaCoT.

    question -> KeywordRetriever (rank_bm25's BM25 over each document's text) -> top documents
             -> one HumanMessage: every retrieved image, the numbered notes, the question
             -> ChatLlavaCoT -> {"answer", "sources", "message"}

Each document is a LangChain ``Document`` with an ``id``; an image document carries its
base64 PNG in ``metadata["image_base64"]`` and a caption as its text. The answer cites the
ids it was given in ``sources``, and the prompt numbers them ``[id]`` so the model can too.

Run it with the demo model (once trained) or any local VLM folder::

    python examples/multimodal_rag.py "How many red shapes are in the chart?" --model path/to/model
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers."""
    return _WORD.findall(text.lower())


class KeywordRetriever(BaseRetriever):
    """BM25 keyword retrieval over documents held in memory (``rank_bm25``; no embeddings, no network).

    Documents sharing no word with the question are never returned.
    """

    documents: list[Document]
    k: int = 3
    """How many documents to return."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        from rank_bm25 import BM25Okapi

        corpus = [tokenize(d.page_content) for d in self.documents]
        if not corpus:
            return []
        words = tokenize(query)
        scores = BM25Okapi(corpus).get_scores(words)
        matching = [i for i, doc in enumerate(corpus) if set(words) & set(doc)]
        best = sorted(matching, key=lambda i: (-scores[i], i))[: self.k]
        return [self.documents[i] for i in best]


def build_prompt(inputs: dict[str, Any]) -> list[HumanMessage]:
    """One user message: the retrieved images, then the numbered notes, then the question."""
    documents: Sequence[Document] = inputs["documents"]
    content: list[dict[str, Any]] = []
    lines = []
    for doc in documents:
        if "image_base64" in doc.metadata:
            content.append(
                {"type": "image", "base64": doc.metadata["image_base64"], "mime_type": "image/png"}
            )
            lines.append(f"[{doc.id}] (image) {doc.page_content}")
        else:
            lines.append(f"[{doc.id}] {doc.page_content}")
    context = "\n".join(lines) or "(nothing found)"
    instruction = "Answer using the sources above and cite their ids."
    text = f"Sources:\n{context}\n\n{instruction}\nQuestion: {inputs['question']}"
    content.append({"type": "text", "text": text})
    return [HumanMessage(content=content)]


def build_chain(llm: Runnable, retriever: BaseRetriever) -> Runnable:
    """The RAG chain: ``{"question": str}`` in, ``{"answer", "sources", "message"}`` out."""
    retrieve = RunnableParallel(question=RunnablePassthrough(), documents=retriever)
    answer = RunnableParallel(
        message=RunnableLambda(build_prompt) | llm,
        sources=RunnableLambda(lambda inputs: [doc.id for doc in inputs["documents"]]),
    )
    shape = RunnableLambda(lambda out: {"answer": out["message"].content, **out})
    return RunnableLambda(lambda inputs: inputs["question"]) | retrieve | answer | shape


def main() -> None:
    """Answer a question over a tiny store of drawn shapes and notes."""
    import base64
    import io

    from PIL import Image, ImageDraw

    from langchain_llava_cot import ChatLlavaCoT

    def drawing(colour: str) -> str:
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    store = [
        Document(id="img-red", page_content="a red circle", metadata={"image_base64": drawing("red")}),
        Document(id="img-blue", page_content="a blue circle", metadata={"image_base64": drawing("blue")}),
        Document(id="note-1", page_content="Red shapes mark the items that failed inspection."),
    ]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--model", default=None, help="local model folder (default: the demo model)")
    args = parser.parse_args()
    chain = build_chain(
        ChatLlavaCoT(model=args.model, strategy="greedy"), KeywordRetriever(documents=store, k=2)
    )
    result = chain.invoke({"question": args.question})
    print(f"{result['answer']}\nsources: {', '.join(result['sources'])}")


if __name__ == "__main__":
    main()
