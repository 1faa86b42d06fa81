"""What the model is given of a conversation's history: no reactions, only the
most recent messages, in turns Gemini accepts (app.graph.to_turns), and the
graph asking the model with exactly that while its checkpoint keeps everything."""

from __future__ import annotations

import sqlite3

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.sqlite import SqliteSaver

from app.checkpoints import strict_serializer
from app.graph import UNANSWERABLE_NAME, ConversationGraph, customer_turn, operator_turn, reply_id, to_turns
from app.llm import ModelError
from tests.support.conversations import RecordingModel


def reply(batch: str, text: str) -> AIMessage:
    return AIMessage(content=text, id=reply_id(batch))


def reaction(wamid: str, emoji: str = "👍") -> HumanMessage:
    return customer_turn(wamid, f"[reaction {emoji}]", answerable=False)


def pairs(turns) -> list[tuple[str, str]]:
    return [(t.role, t.text) for t in turns]


#: Ten messages: five questions, each answered.
LONG = [m for i in range(1, 6) for m in (customer_turn(f"w{i}", f"question {i}"), reply(f"b{i}", f"answer {i}"))]


def test_a_reaction_is_marked_in_the_history_and_never_shown_to_the_model():
    marked = customer_turn("w-r", "[reaction 👍]", answerable=False)
    assert (marked.id, marked.name) == ("w-r", UNANSWERABLE_NAME)
    # A reaction between an answer and the next question is not a turn of the customer's
    history = [customer_turn("w1", "hi"), reply("b1", "hello!"), marked, customer_turn("w2", "price?")]
    assert pairs(to_turns(history)) == [("user", "hi"), ("model", "hello!"), ("user", "price?")]


def test_a_reaction_that_arrived_with_a_text_does_not_join_its_words():
    history = [customer_turn("w1", "is it in stock?"), reaction("w-r", "❤️")]
    assert pairs(to_turns(history)) == [("user", "is it in stock?")]


def test_a_history_whose_only_news_is_a_reaction_is_nothing_to_answer():
    history = [customer_turn("w1", "thanks"), reply("b1", "you're welcome"), reaction("w-r")]
    with pytest.raises(ModelError, match="end with a customer turn"):
        to_turns(history)


def test_only_the_last_n_messages_are_shown():
    history = [*LONG, customer_turn("w6", "question 6")]
    assert pairs(to_turns(history, limit=3)) == [("user", "question 5"), ("model", "answer 5"),
                                                 ("user", "question 6")]
    # Without a limit, everything
    assert len(to_turns(history)) == 11


def test_a_model_turn_where_the_cut_fell_is_dropped_so_the_customer_speaks_first():
    history = [*LONG, customer_turn("w6", "question 6")]
    # The last 4 messages begin with "answer 4"
    assert pairs(to_turns(history, limit=4)) == [("user", "question 5"), ("model", "answer 5"),
                                                 ("user", "question 6")]


def test_reactions_do_not_use_up_the_window():
    history = [customer_turn("w1", "old"), reply("b1", "old answer"), customer_turn("w2", "kept"),
               reaction("w-r1"), reply("b2", "kept answer"), reaction("w-r2"), customer_turn("w3", "new"),
               reaction("w-r3")]
    assert pairs(to_turns(history, limit=3)) == [("user", "kept"), ("model", "kept answer"), ("user", "new")]


def test_the_window_counts_messages_and_merges_them_after_the_cut():
    history = [customer_turn("w1", "a"), customer_turn("w2", "b"), reply("b1", "answer"),
               operator_turn("op-1", "Rita here."), customer_turn("w3", "c"), customer_turn("w4", "d")]
    # The last 4 messages: the AI's answer and the operator's (one model turn, dropped at the start), c, d
    assert pairs(to_turns(history, limit=4)) == [("user", "c\n\nd")]
    # The last 5: b, then the answer and the operator's turn merged, then c and d merged
    assert pairs(to_turns(history, limit=5)) == [("user", "b"), ("model", "answer\n\n[human operator] Rita here."),
                                                 ("user", "c\n\nd")]


def test_a_conversation_the_business_opened_starts_with_the_customers_turn():
    history = [operator_turn("op-1", "Your lamp shipped today."), customer_turn("w1", "when will it arrive?")]
    assert pairs(to_turns(history)) == [("user", "when will it arrive?")]


def test_a_window_of_one_message_is_the_customers_last():
    assert pairs(to_turns([*LONG, customer_turn("w6", "last")], limit=1)) == [("user", "last")]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_window_of_no_message_is_refused(limit):
    with pytest.raises(ValueError, match="at least 1"):
        to_turns([customer_turn("w1", "hi")], limit=limit)
    with pytest.raises(ValueError, match="at least 1"):
        ConversationGraph(SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False)), RecordingModel(),
                          history_messages=limit)


@pytest.fixture
def saver(tmp_path):
    conn = sqlite3.connect(tmp_path / "checkpoints.db", check_same_thread=False)
    saver = SqliteSaver(conn, serde=strict_serializer())
    saver.setup()
    yield saver
    conn.close()


def test_the_graph_shows_the_model_the_window_and_checkpoints_the_whole_history(saver):
    model = RecordingModel()
    graph = ConversationGraph(saver, model, history_messages=3)
    # Given a conversation of four answered questions, with a reaction to the last answer
    for i in range(1, 5):
        graph.run("c1", [customer_turn(f"w{i}", f"question {i}")], reply_to=f"b{i}")
    graph.run("c1", [reaction("w-r")], reply_to=None)
    model.calls.clear()

    # When a question arrives with a reaction in the same batch
    text = graph.run("c1", [customer_turn("w5", "question 5"), reaction("w-r2", "🙏")], reply_to="b5")

    # Then the model saw the last three messages, no reaction
    (call,) = model.calls
    assert pairs(call) == [("user", "question 4"), ("model", "Thanks for your message! You said: question 4"),
                           ("user", "question 5")]
    assert text == "Thanks for your message! You said: question 5"
    # And the checkpoint (strict serializer) keeps everything, reactions marked
    history = graph.messages("c1")
    assert [m.id for m in history] == ["w1", "reply:b1", "w2", "reply:b2", "w3", "reply:b3", "w4", "reply:b4",
                                       "w-r", "w5", "w-r2", "reply:b5"]
    assert [m.id for m in history if m.name == UNANSWERABLE_NAME] == ["w-r", "w-r2"]


def test_a_reaction_after_the_answer_does_not_make_the_graph_answer_again(saver):
    model = RecordingModel()
    graph = ConversationGraph(saver, model)
    graph.run("c1", [customer_turn("w1", "hello")], reply_to="b1")
    # Given the customer reacted to the answer
    graph.run("c1", [reaction("w-r")], reply_to=None)

    # When batch b1 runs again with no outbox row to tell it (e.g. a crash before the row was written)
    again = graph.run("c1", [customer_turn("w1", "hello")], reply_to="b1")

    # Then the route sees the history answered: no second model call
    assert again is None and len(model.calls) == 1
    # And a batch of nothing but a reaction is not answered either
    assert graph.run("c1", [reaction("w-r9", "😂")], reply_to="b9") is None
    assert len(model.calls) == 1
