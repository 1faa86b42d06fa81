"""The conversation graph: one LangGraph thread per conversation.

State: the message history (``add_messages``: customer turns are
``HumanMessage`` with the inbound wamid as id, AI replies ``AIMessage``
with id ``reply:<batch id>``, operator turns ``AIMessage`` named
``operator`` with the operator message's id, so a repeated write
replaces instead of duplicating) and ``operator_active``.  A reaction
is a ``HumanMessage`` named ``unanswerable``: part of the record, never
shown to the model (:func:`to_turns`), which would otherwise read a bare
"[reaction 👍]" as something the customer wrote and answer it.

The checkpoint keeps the whole history; the model is shown only its
most recent messages (``history_messages``), so a long conversation
does not grow the prompt without bound.

``START -> ingest -> route -> respond -> END``; route goes to END while
an operator holds the conversation, when the run has no batch to
answer, or when the history the model sees does not end with the
customer (someone answered already; a later reaction changes nothing).
Takeover, handback and operator turns are written with
``update_state(..., as_node="operator")``, never ``interrupt()``: new
input on an interrupted thread would restart it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from app.errors import TransientError
from app.llm import FALLBACK_REPLY, HISTORY_MESSAGES, SYSTEM_PROMPT, Model, Turn, merge_turns
from app.whatsapp import fit_text

__all__ = [
    "ConversationState",
    "ConversationGraph",
    "reply_id",
    "customer_turn",
    "operator_turn",
    "to_turns",
    "OPERATOR_NAME",
    "OPERATOR_PREFIX",
    "UNANSWERABLE_NAME",
]

logger = logging.getLogger(__name__)

#: The ``name`` of an AIMessage that an operator wrote.
OPERATOR_NAME = "operator"
#: How an operator turn reaches the model (Gemini has user/model roles only).
OPERATOR_PREFIX = "[human operator]"
#: The ``name`` of a HumanMessage that is not words to answer (a reaction).
UNANSWERABLE_NAME = "unanswerable"
#: The run's configurable key of ``run(before_answer=...)``; LangGraph
#: keeps "__"-prefixed keys out of the checkpoint's metadata.
_BEFORE_ANSWER = "__before_answer"


def _database_errors() -> tuple[type[Exception], ...]:
    """The checkpointer's errors that may go away: the database unreachable
    or restarting, no pooled connection free in time (psycopg_pool's
    PoolTimeout is a psycopg OperationalError), a serialization failure
    or deadlock, SQLite's "database is locked"."""
    errors: list[type[Exception]] = [sqlite3.OperationalError]
    try:
        import psycopg
    except ImportError:  # the embedded SQLite set-up needs no PostgreSQL driver
        pass
    else:
        errors.append(psycopg.OperationalError)
    return tuple(errors)


#: Checkpointer errors a worker retries (TransientError) instead of dead-lettering.
_DATABASE_ERRORS = _database_errors()


@contextlib.contextmanager
def _checkpointer_errors_are_transient(thread_id: str) -> Iterator[None]:
    try:
        yield
    except _DATABASE_ERRORS as e:
        raise TransientError(f"the checkpoints of {thread_id!r} are unavailable: {type(e).__name__}: {e}") from e


class ConversationState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    operator_active: bool
    #: The batch this run answers; None: store the input, answer nothing.
    reply_to: str | None


def reply_id(batch_id: str) -> str:
    """The graph id of the AI's reply to ``batch_id``."""
    return f"reply:{batch_id}"


def customer_turn(wamid: str, text: str, *, answerable: bool = True) -> HumanMessage:
    """The customer's message as a history turn; an unanswerable one (a
    reaction) is marked so that the model never sees it."""
    return HumanMessage(content=text, id=wamid, name=None if answerable else UNANSWERABLE_NAME)


def operator_turn(message_id: str, text: str) -> AIMessage:
    return AIMessage(content=text, id=message_id, name=OPERATOR_NAME)


def _text(message: BaseMessage) -> str:
    content = message.content
    return content if isinstance(content, str) else str(content)


def _shown(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """The messages the model may see: customer, AI and operator turns,
    not reactions (they are no words of the customer's to answer)."""
    return [m for m in messages
            if isinstance(m, AIMessage) or (isinstance(m, HumanMessage) and m.name != UNANSWERABLE_NAME)]


def to_turns(messages: Sequence[BaseMessage], *, limit: int | None = None) -> list[Turn]:
    """What the model is given of the history.

    Reactions are left out; of the rest only the last ``limit`` messages
    are kept (None: all), so the prompt stays bounded however long the
    conversation.  Operator turns become model turns marked
    ``[human operator]``, so the model knows what the business already
    said and by whom.  Same-side neighbours are merged
    (:func:`app.llm.merge_turns`), and a model turn left at the start
    (where the cut fell, or a conversation the business opened) is
    dropped: Gemini refuses a conversation that does not start with the
    user.

    Raises:
      ValueError: ``limit`` is less than 1.
      ModelError: the history does not end with the customer.
    """
    shown = _shown(messages)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"the model must be shown at least 1 message, got limit={limit}")
        shown = shown[-limit:]
    turns: list[Turn] = []
    for message in shown:
        if isinstance(message, HumanMessage):
            turns.append(Turn("user", _text(message)))
        else:
            text = _text(message)
            if message.name == OPERATOR_NAME:
                text = f"{OPERATOR_PREFIX} {text}"
            turns.append(Turn("model", text))
    merged = merge_turns(turns)
    # Merged turns alternate and end with the user: at most one model turn leads.
    return merged[1:] if merged[0].role == "model" else merged


def _ends_with_customer(messages: Sequence[BaseMessage]) -> bool:
    shown = _shown(messages)
    return bool(shown) and isinstance(shown[-1], HumanMessage)


class ConversationGraph:
    """The compiled graph with its checkpointer and model.

    A database error of the checkpointer (unreachable, locked, no pooled
    connection in time) is raised as :class:`~app.errors.TransientError`,
    so the task is retried rather than dead-lettered.

    Parameters:
      checkpointer: where each conversation's thread is saved.
      model: what writes the AI's replies.
      system_prompt: the model's instructions.
      history_messages: how many of the most recent messages the model
        is shown (MODEL_HISTORY_MESSAGES); the checkpoint keeps them all.
    """

    def __init__(self, checkpointer: BaseCheckpointSaver, model: Model, *,
                 system_prompt: str = SYSTEM_PROMPT, history_messages: int = HISTORY_MESSAGES) -> None:
        if history_messages < 1:
            raise ValueError(f"history_messages must be at least 1, got {history_messages}")
        self.model = model
        self.system_prompt = system_prompt
        self.history_messages = history_messages
        builder = StateGraph(ConversationState)
        builder.add_node("ingest", self._ingest)
        builder.add_node("respond", self._respond)
        # Reached only through update_state(as_node="operator"): its writes
        # are the operator's, and it leads to END, so nothing is pending.
        builder.add_node("operator", self._ingest)
        builder.add_edge(START, "ingest")
        builder.add_conditional_edges("ingest", self._route, ["respond", END])
        builder.add_edge("respond", END)
        builder.add_edge("operator", END)
        self.graph = builder.compile(checkpointer=checkpointer)

    @staticmethod
    def _config(thread_id: str) -> Any:
        return {"configurable": {"thread_id": thread_id}}

    @staticmethod
    def _ingest(state: ConversationState) -> dict:
        # The input's messages are already merged into the state by add_messages.
        return {}

    @staticmethod
    def _route(state: ConversationState) -> str:
        if state.get("operator_active") or not state.get("reply_to"):
            return END
        if not _ends_with_customer(state.get("messages", [])):
            return END
        return "respond"

    def _respond(self, state: ConversationState, config: RunnableConfig) -> dict:
        batch_id = state["reply_to"]
        assert batch_id is not None  # the route guarantees it
        before_answer = config.get("configurable", {}).get(_BEFORE_ANSWER)
        if before_answer is not None:
            before_answer()
        turns = to_turns(state["messages"], limit=self.history_messages)
        text = self.model.generate(self.system_prompt, turns).strip()
        if not text:
            text = FALLBACK_REPLY
        fitted = fit_text(text)
        if fitted != text:
            # Cut here, not at the send: the history holds what the customer gets.
            logger.warning("The reply to batch %s was %d characters; cut to %d, WhatsApp's limit.",
                           batch_id, len(text), len(fitted))
        return {"messages": [AIMessage(content=fitted, id=reply_id(batch_id))]}

    def run(self, thread_id: str, messages: list[BaseMessage], *, reply_to: str | None,
            before_answer: Callable[[], None] | None = None) -> str | None:
        """Add ``messages`` to the thread and, if ``reply_to`` is given and
        the route allows, let the model answer.

        Parameters:
          before_answer: called once the route has decided that the model
            answers, just before it is asked (e.g. a typing indicator).

        Returns:
          The reply's text when the model answered in this run, else None.
        """
        update: Any = {"messages": messages, "reply_to": reply_to}
        config = self._config(thread_id)
        if before_answer is not None:
            config["configurable"][_BEFORE_ANSWER] = before_answer
        # "sync": each step's checkpoint is saved before the next starts, so
        # the model's answer is stored before anything is sent.
        with _checkpointer_errors_are_transient(thread_id):
            result = self.graph.invoke(update, config, durability="sync")
        if reply_to is None:
            return None
        last = result["messages"][-1] if result.get("messages") else None
        if isinstance(last, AIMessage) and last.id == reply_id(reply_to):
            return _text(last)
        return None

    def state(self, thread_id: str) -> ConversationState:
        with _checkpointer_errors_are_transient(thread_id):
            values = self.graph.get_state(self._config(thread_id)).values
        return values  # type: ignore[return-value]

    def messages(self, thread_id: str) -> list[BaseMessage]:
        return list(self.state(thread_id).get("messages", []))

    def operator_active(self, thread_id: str) -> bool:
        return bool(self.state(thread_id).get("operator_active", False))

    def write_as_operator(self, thread_id: str, values: dict) -> None:
        """Write ``values`` (flag and/or messages) as the operator's, not a run."""
        with _checkpointer_errors_are_transient(thread_id):
            self.graph.update_state(self._config(thread_id), values, as_node="operator")

    def forget_reply(self, thread_id: str, batch_id: str) -> None:
        """Drop a reply the customer never received from the history."""
        if any(m.id == reply_id(batch_id) for m in self.messages(thread_id)):
            self.write_as_operator(thread_id, {"messages": [RemoveMessage(id=reply_id(batch_id))]})
