"""payment_settings: partial payments allowed, and their minimum (in minor units of its currency)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 01:15:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payment_settings") as batch:
        # Off until an organization allows them: rows written before mean "full amounts only".
        batch.add_column(sa.Column("partial_payments", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("partial_minimum_minor", sa.BigInteger()))
        batch.add_column(sa.Column("partial_currency", sa.String(3)))


def downgrade() -> None:
    with op.batch_alter_table("payment_settings") as batch:
        batch.drop_column("partial_currency")
        batch.drop_column("partial_minimum_minor")
        batch.drop_column("partial_payments")
