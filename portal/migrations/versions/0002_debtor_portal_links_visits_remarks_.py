"""debtor portal: links, visits, remarks, branding

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:47:50.668435
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('portal_links',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('invoice_ids', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_portal_links_customer_id_customers')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_portal_links_organization_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_links'))
    )
    with op.batch_alter_table('portal_links', schema=None) as batch_op:
        batch_op.create_index('ix_portal_links_customer', ['organization_id', 'customer_id'], unique=False)

    op.create_table('link_visits',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('link_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('visited_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('browser_family', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['link_id'], ['portal_links.id'], name=op.f('fk_link_visits_link_id_portal_links')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_link_visits_organization_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_link_visits'))
    )
    with op.batch_alter_table('link_visits', schema=None) as batch_op:
        batch_op.create_index('ix_link_visits_link', ['link_id', 'visited_at'], unique=False)

    op.create_table('remarks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('invoice_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('author', sa.String(length=20), nullable=False),
    sa.Column('author_name', sa.String(length=200), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('reply_to', sa.String(length=320), nullable=True),
    sa.Column('link_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], name=op.f('fk_remarks_invoice_id_invoices')),
    sa.ForeignKeyConstraint(['link_id'], ['portal_links.id'], name=op.f('fk_remarks_link_id_portal_links')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_remarks_organization_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remarks'))
    )
    with op.batch_alter_table('remarks', schema=None) as batch_op:
        batch_op.create_index('ix_remarks_invoice', ['invoice_id', 'id'], unique=False)
        batch_op.create_index('ix_remarks_link', ['link_id', 'created_at'], unique=False)
        batch_op.create_index('ix_remarks_org_created', ['organization_id', 'created_at', 'id'], unique=False)

    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contact_email', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('contact_phone', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('brand_color', sa.String(length=7), nullable=True))
        batch_op.add_column(sa.Column('logo_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('logo_type', sa.String(length=20), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('organizations', schema=None) as batch_op:
        batch_op.drop_column('logo_type')
        batch_op.drop_column('logo_sha256')
        batch_op.drop_column('brand_color')
        batch_op.drop_column('contact_phone')
        batch_op.drop_column('contact_email')

    with op.batch_alter_table('remarks', schema=None) as batch_op:
        batch_op.drop_index('ix_remarks_org_created')
        batch_op.drop_index('ix_remarks_link')
        batch_op.drop_index('ix_remarks_invoice')

    op.drop_table('remarks')
    with op.batch_alter_table('link_visits', schema=None) as batch_op:
        batch_op.drop_index('ix_link_visits_link')

    op.drop_table('link_visits')
    with op.batch_alter_table('portal_links', schema=None) as batch_op:
        batch_op.drop_index('ix_portal_links_customer')

    op.drop_table('portal_links')
