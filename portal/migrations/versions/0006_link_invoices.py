"""portal links: a scoped link's invoices in a join table instead of a JSON column

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 22:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# Lightweight descriptions of the rows the data step reads and writes (not the application's tables, which
# follow the code, not this revision).
links_before = sa.table('portal_links', sa.column('id', Id), sa.column('organization_id', Id),
                        sa.column('customer_id', Id), sa.column('invoice_ids', sa.JSON()))
links_after = sa.table('portal_links', sa.column('id', Id), sa.column('scoped', sa.Boolean()))
invoices = sa.table('invoices', sa.column('id', Id), sa.column('organization_id', Id), sa.column('customer_id', Id))
link_invoices = sa.table('link_invoices', sa.column('link_id', Id), sa.column('invoice_id', Id),
                         sa.column('organization_id', Id))


def upgrade() -> None:
    op.create_table('link_invoices',
    sa.Column('link_id', Id, nullable=False),
    sa.Column('invoice_id', Id, nullable=False),
    sa.Column('organization_id', Id, nullable=False),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], name=op.f('fk_link_invoices_invoice_id_invoices')),
    sa.ForeignKeyConstraint(['link_id'], ['portal_links.id'], name=op.f('fk_link_invoices_link_id_portal_links')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'],
                            name=op.f('fk_link_invoices_organization_id_organizations')),
    sa.PrimaryKeyConstraint('link_id', 'invoice_id', name=op.f('pk_link_invoices'))
    )
    with op.batch_alter_table('portal_links', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scoped', sa.Boolean(), server_default=sa.false(), nullable=False))

    conn = op.get_bind()
    for link in conn.execute(sa.select(links_before).where(links_before.c.invoice_ids.is_not(None))).all():
        if link.invoice_ids is None:  # JSON null: the whole history, as before
            continue
        # Any other value scoped the link. Only ids of the link's own customer move over: a value that is not
        # a list of ids (never written by the code, but possible in the column) leaves a scope of nothing.
        listed = link.invoice_ids if isinstance(link.invoice_ids, list) else []
        ids = {i for i in listed if isinstance(i, int) and not isinstance(i, bool)}
        owned = conn.execute(sa.select(invoices.c.id).where(
            invoices.c.organization_id == link.organization_id, invoices.c.customer_id == link.customer_id,
            invoices.c.id.in_(ids))).scalars().all() if ids else []
        conn.execute(links_after.update().where(links_after.c.id == link.id).values(scoped=True))
        if owned:
            conn.execute(link_invoices.insert(), [
                {'link_id': link.id, 'invoice_id': invoice_id, 'organization_id': link.organization_id}
                for invoice_id in sorted(owned)])

    # In place (SQLite 3.35+ drops a plain column itself): batch mode's copy-and-rename would drop the old
    # table, which SQLite refuses while visits, remarks and checkouts refer to its rows.
    with op.batch_alter_table('portal_links', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('invoice_ids')


def downgrade() -> None:
    with op.batch_alter_table('portal_links', schema=None) as batch_op:
        batch_op.add_column(sa.Column('invoice_ids', sa.JSON(), nullable=True))

    conn = op.get_bind()
    listed: dict[int, list[int]] = {}
    for row in conn.execute(sa.select(link_invoices.c.link_id, link_invoices.c.invoice_id)
                            .order_by(link_invoices.c.link_id, link_invoices.c.invoice_id)):
        listed.setdefault(row.link_id, []).append(row.invoice_id)
    scoped = conn.execute(sa.select(links_after.c.id).where(links_after.c.scoped)).scalars().all()
    restored = sa.table('portal_links', sa.column('id', Id), sa.column('invoice_ids', sa.JSON()))
    for link_id in scoped:
        conn.execute(restored.update().where(restored.c.id == link_id).values(invoice_ids=listed.get(link_id, [])))

    with op.batch_alter_table('portal_links', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('scoped')
    op.drop_table('link_invoices')
