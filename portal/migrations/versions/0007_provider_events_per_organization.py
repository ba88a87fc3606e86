"""provider events, payments and review items: unique per organization

Organizations that share the install's provider keys see each other's events and payment ids at their own
webhooks. Unique across all organizations, the first organization to see one kept it from the rightful one;
per organization, each records only what is its own and never blocks another.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 09:00:00.000000
"""

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# (table, constraint and columns before, constraint and columns now); organization_id leads, as every lookup
# names it. The names follow the metadata's convention (uq_<table>_<columns>), except where that passes
# PostgreSQL's 63 characters.
CHANGES = (
    ('provider_events',
     ('uq_provider_events_provider_event_id', ['provider', 'event_id']),
     ('uq_provider_events_organization_id_provider_event_id', ['organization_id', 'provider', 'event_id'])),
    ('payments',
     ('uq_payments_provider_provider_payment_id', ['provider', 'provider_payment_id']),
     ('uq_payments_organization_id_provider_provider_payment_id',
      ['organization_id', 'provider', 'provider_payment_id'])),
    ('review_items',
     ('uq_review_items_provider_provider_payment_id_reason', ['provider', 'provider_payment_id', 'reason']),
     ('uq_review_items_org_provider_payment_id_reason',
      ['organization_id', 'provider', 'provider_payment_id', 'reason'])),
)


def upgrade() -> None:
    for table, (old_name, _), (new_name, columns) in CHANGES:
        # Batch mode: SQLite cannot alter a constraint, so Alembic copies the table (PostgreSQL alters it).
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(old_name, type_='unique')
            batch_op.create_unique_constraint(new_name, columns)


def downgrade() -> None:
    # Fails if two organizations recorded the same provider id meanwhile: that is the data this revision allows.
    for table, (old_name, columns), (new_name, _) in CHANGES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(new_name, type_='unique')
            batch_op.create_unique_constraint(old_name, columns)
