"""The one MetaData every table belongs to, and the column types shared by the table modules."""

from __future__ import annotations

import sqlalchemy as sa

# Constraint names are explicit so that Alembic migrations name them the same way on every engine.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only aliases the rowid (and so autoincrements) for a column declared exactly INTEGER PRIMARY KEY.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
# Integer minor units; a signed 64-bit column holds any amount the API accepts.
Minor = sa.BigInteger()
