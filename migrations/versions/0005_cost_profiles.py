"""Measured cost curves per machine profile (data/costs/*.json).

Revision ID: 0005_costs
Revises: 0004_catalogue_version
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_costs'
down_revision = '0004_catalogue_version'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cost_profiles',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('device', sa.String(length=16), nullable=False),
    sa.Column('machine', sa.JSON(), nullable=False),
    sa.Column('conditions', sa.JSON(), nullable=False),
    sa.Column('method', sa.JSON(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('cost_curves',
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('technique_slug', sa.String(length=96), nullable=False),
    sa.Column('axis', sa.String(length=16), nullable=False),
    sa.Column('x_label', sa.String(), nullable=False),
    sa.Column('stopped', sa.Text(), nullable=False),
    sa.Column('hyperparameters', sa.JSON(), nullable=False),
    sa.Column('points', sa.JSON(), nullable=False),
    sa.Column('fits', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['profile'], ['cost_profiles.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('profile', 'technique_slug', 'axis')
    )


def downgrade() -> None:
    op.drop_table('cost_curves')
    op.drop_table('cost_profiles')
