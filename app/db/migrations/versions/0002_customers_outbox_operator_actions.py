"""Customers, the reply outbox, operator actions, and message details.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Additive only: the foundation's columns stay as they are.  Alterations
go through ``batch_alter_table`` so that SQLite (which cannot add a
foreign key to an existing table) gets a table copy and PostgreSQL
plain ALTERs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wa_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("previous_wa_id", sa.String(length=64), nullable=True),
        sa.Column("profile_name", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id"),
        sa.UniqueConstraint("wa_id"),
    )
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("operator_id", sa.String(length=128), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_operator_actions_conversation", "operator_actions", ["conversation_id", "id"])
    op.create_table(
        "reply_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("wamid", sa.String(length=255), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_title", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name="fk_reply_outbox_message_id",
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversation_id", "key", name="uq_reply_outbox_key"),
    )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("customer_id", sa.Integer(), nullable=True))
        batch.create_index("ix_conversations_customer_id", ["customer_id"])
        batch.create_foreign_key(
            "fk_conversations_customer_id", "customers", ["customer_id"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("message_statuses") as batch:
        batch.add_column(sa.Column("callback_data", sa.String(length=512), nullable=True))
        batch.create_index("ix_message_statuses_callback", ["callback_data"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("sent_at_s", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("context_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("reaction_to", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("emoji", sa.String(length=64), nullable=True))
        # Rows from before this revision are customer texts and replies: answerable.
        batch.add_column(sa.Column("answerable", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch.add_column(sa.Column("operator_message_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("operator_id", sa.String(length=128), nullable=True))
        batch.create_unique_constraint("uq_messages_operator_message_id", ["operator_message_id"])


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_operator_message_id", type_="unique")
        for column in ("operator_id", "operator_message_id", "answerable", "emoji", "reaction_to", "context_id",
                       "sent_at_s"):
            batch.drop_column(column)
    with op.batch_alter_table("message_statuses") as batch:
        batch.drop_index("ix_message_statuses_callback")
        batch.drop_column("callback_data")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint("fk_conversations_customer_id", type_="foreignkey")
        batch.drop_index("ix_conversations_customer_id")
        batch.drop_column("customer_id")
    op.drop_table("reply_outbox")
    op.drop_index("ix_operator_actions_conversation", table_name="operator_actions")
    op.drop_table("operator_actions")
    op.drop_table("customers")
