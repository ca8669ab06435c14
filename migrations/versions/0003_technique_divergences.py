"""Paper-vs-released-code differences of each technique (JSON list).

Revision ID: 0003_divergences
Revises: 0002_identification
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_divergences'
down_revision = '0002_identification'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('techniques', schema=None) as batch_op:
        batch_op.add_column(sa.Column('divergences', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('techniques', schema=None) as batch_op:
        batch_op.drop_column('divergences')
