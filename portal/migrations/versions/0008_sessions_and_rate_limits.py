"""sessions (server-side, hashed secrets) and rate-limit windows

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 00:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # Debtor sessions used to be signed cookies; those cookies simply stop opening anything (the debtor opens
    # their link again), so there is nothing to carry over.
    op.create_table('sessions',
    sa.Column('id', Id, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('organization_id', Id, nullable=True),
    sa.Column('link_id', Id, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind <> 'debtor' OR link_id IS NOT NULL", name=op.f('ck_sessions_debtor_has_link')),
    sa.ForeignKeyConstraint(['link_id'], ['portal_links.id'], name=op.f('fk_sessions_link_id_portal_links')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'],
                            name=op.f('fk_sessions_organization_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_sessions_secret_hash'))
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index('ix_sessions_expires', ['expires_at'], unique=False)
        batch_op.create_index('ix_sessions_link', ['link_id'], unique=False)

    op.create_table('rate_limits',
    sa.Column('id', Id, nullable=False),
    sa.Column('scope', sa.String(length=20), nullable=False),
    sa.Column('bucket', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_limits')),
    sa.UniqueConstraint('scope', 'bucket', 'key', 'window_start',
                        name=op.f('uq_rate_limits_scope_bucket_key_window_start'))
    )
    with op.batch_alter_table('rate_limits', schema=None) as batch_op:
        batch_op.create_index('ix_rate_limits_expires', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rate_limits', schema=None) as batch_op:
        batch_op.drop_index('ix_rate_limits_expires')
    op.drop_table('rate_limits')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_sessions_link')
        batch_op.drop_index('ix_sessions_expires')
    op.drop_table('sessions')
