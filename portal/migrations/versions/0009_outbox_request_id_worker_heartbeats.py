"""outbox_events: the request id that caused each event; worker_heartbeats; provider keys as text (encrypted)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 00:20:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: events written before have none, and neither do those of commands run by hand.
    op.add_column("outbox_events", sa.Column("request_id", sa.String(128)))
    op.create_table(
        "worker_heartbeats",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("payment_settings") as batch:
        for column in ("mollie_api_key", "stripe_api_key"):
            batch.alter_column(column, type_=sa.Text(), existing_type=sa.String(200))


def downgrade() -> None:
    with op.batch_alter_table("payment_settings") as batch:
        for column in ("mollie_api_key", "stripe_api_key"):
            batch.alter_column(column, type_=sa.String(200), existing_type=sa.Text())
    op.drop_table("worker_heartbeats")
    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_column("request_id")
