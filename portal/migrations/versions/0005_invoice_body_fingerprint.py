"""invoices: body fingerprint of the last batch push

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 08:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and empty: invoices stored before have no fingerprint, and their next unchanged resend
    # through the batch API sets it.
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_fingerprint', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_column('body_fingerprint')
