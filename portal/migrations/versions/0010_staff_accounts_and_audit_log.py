"""staff accounts: people, memberships with a role per organization, one-time password tokens, staff sessions,
the append-only audit log, and an organization's "staff must use TOTP"

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 01:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Timestamp = sa.DateTime(timezone=True)

# The audit log is append-only: the product never updates it, and the database refuses to.
_PG_FUNCTION = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END $$
"""
_PG_TRIGGER = ("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
               "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
_SQLITE_TRIGGER = ("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
                   "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")


def upgrade() -> None:
    op.create_table('staff_people',
    sa.Column('id', Id, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('password_hash', sa.String(length=200), nullable=True),
    sa.Column('password_changed_at', Timestamp, nullable=True),
    sa.Column('locale', sa.String(length=20), server_default='en', nullable=False),
    sa.Column('totp_secret', sa.String(length=64), nullable=True),
    sa.Column('totp_enabled_at', Timestamp, nullable=True),
    sa.Column('totp_last_step', sa.BigInteger(), nullable=True),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_people')),
    sa.UniqueConstraint('email', name=op.f('uq_staff_people_email'))
    )
    op.create_table('staff_memberships',
    sa.Column('id', Id, nullable=False),
    sa.Column('organization_id', Id, nullable=False),
    sa.Column('person_id', Id, nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('disabled_at', Timestamp, nullable=True),
    sa.CheckConstraint("role IN ('viewer', 'finance', 'admin')", name=op.f('ck_staff_memberships_known_role')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'],
                            name=op.f('fk_staff_memberships_organization_id_organizations')),
    sa.ForeignKeyConstraint(['person_id'], ['staff_people.id'],
                            name=op.f('fk_staff_memberships_person_id_staff_people')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_memberships')),
    sa.UniqueConstraint('organization_id', 'person_id', name=op.f('uq_staff_memberships_organization_id_person_id'))
    )
    op.create_index('ix_staff_memberships_person', 'staff_memberships', ['person_id'], unique=False)
    op.create_table('staff_tokens',
    sa.Column('id', Id, nullable=False),
    sa.Column('person_id', Id, nullable=False),
    sa.Column('purpose', sa.String(length=20), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', Timestamp, nullable=False),
    sa.Column('expires_at', Timestamp, nullable=False),
    sa.Column('used_at', Timestamp, nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['staff_people.id'], name=op.f('fk_staff_tokens_person_id_staff_people')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_staff_tokens_token_hash'))
    )
    op.create_index('ix_staff_tokens_person', 'staff_tokens', ['person_id'], unique=False)
    op.create_table('audit_log',
    sa.Column('id', Id, nullable=False),
    sa.Column('organization_id', Id, nullable=True),
    sa.Column('person_id', Id, nullable=True),
    sa.Column('actor_email', sa.String(length=320), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', Timestamp, nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'],
                            name=op.f('fk_audit_log_organization_id_organizations')),
    sa.ForeignKeyConstraint(['person_id'], ['staff_people.id'], name=op.f('fk_audit_log_person_id_staff_people')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_org', 'audit_log', ['organization_id', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)

    with op.batch_alter_table('sessions') as batch:
        batch.add_column(sa.Column('staff_person_id', Id, nullable=True))
        batch.create_foreign_key(op.f('fk_sessions_staff_person_id_staff_people'), 'staff_people',
                                 ['staff_person_id'], ['id'])
        batch.create_check_constraint(op.f('ck_sessions_staff_has_person'),
                                      "kind NOT IN ('staff', 'staff_2fa') OR staff_person_id IS NOT NULL")
        batch.create_index('ix_sessions_staff_person', ['staff_person_id'], unique=False)
    # A plain ADD COLUMN (no table copy: on SQLite, copying organizations would break every foreign key to it).
    op.add_column('organizations',
                  sa.Column('staff_require_totp', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column('organizations', 'staff_require_totp')
    op.execute("DELETE FROM sessions WHERE kind IN ('staff', 'staff_2fa')")
    with op.batch_alter_table('sessions') as batch:
        batch.drop_index('ix_sessions_staff_person')
        batch.drop_constraint(op.f('ck_sessions_staff_has_person'), type_='check')
        batch.drop_constraint(op.f('fk_sessions_staff_person_id_staff_people'), type_='foreignkey')
        batch.drop_column('staff_person_id')
    op.execute("DROP TRIGGER audit_log_no_update" + (" ON audit_log" if op.get_bind().dialect.name == 'postgresql'
                                                      else ""))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_index('ix_audit_log_org', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_staff_tokens_person', table_name='staff_tokens')
    op.drop_table('staff_tokens')
    op.drop_index('ix_staff_memberships_person', table_name='staff_memberships')
    op.drop_table('staff_memberships')
    op.drop_table('staff_people')
