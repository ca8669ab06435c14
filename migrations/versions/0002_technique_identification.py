"""Add techniques.identification: which paper an entry is taken to mean, with alternatives and evidence.

Revision ID: 0002_identification
Revises: 0001
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_identification'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('techniques', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identification', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('techniques', schema=None) as batch_op:
        batch_op.drop_column('identification')
