"""A catalogue version (one counter row, raised by every write) and a version per technique row
(for compare-and-swap writes).

Revision ID: 0004_catalogue_version
Revises: 0003_divergences
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_catalogue_version'
down_revision = '0003_divergences'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalogue_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute("INSERT INTO catalogue_version (id, version) VALUES (1, 1)")
    op.add_column('techniques', sa.Column('version', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+): copying the table would cascade to its dependants
    op.drop_column('techniques', 'version')
    op.drop_table('catalogue_version')
