"""Create the catalogue tables and, on SQLite, the FTS5 search index.

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('applications',
    sa.Column('tag', sa.String(length=96), nullable=False),
    sa.PrimaryKeyConstraint('tag')
    )
    op.create_table('categories',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('parent_id', sa.String(length=64), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['categories.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('categories', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_categories_parent_id'), ['parent_id'], unique=False)

    op.create_table('meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('references',
    sa.Column('citekey', sa.String(length=128), nullable=False),
    sa.Column('entry_type', sa.String(), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('persons', sa.JSON(), nullable=False),
    sa.Column('bibtex', sa.Text(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('citekey')
    )
    op.create_table('techniques',
    sa.Column('slug', sa.String(length=96), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('aliases', sa.JSON(), nullable=False),
    sa.Column('category_id', sa.String(length=64), nullable=False),
    sa.Column('subcategory_id', sa.String(length=64), nullable=False),
    sa.Column('also_in', sa.JSON(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('formula_latex', sa.Text(), nullable=False),
    sa.Column('formula_legend', sa.JSON(), nullable=False),
    sa.Column('strengths', sa.JSON(), nullable=False),
    sa.Column('limitations', sa.JSON(), nullable=False),
    sa.Column('complexity', sa.JSON(), nullable=False),
    sa.Column('citekey', sa.String(length=128), nullable=False),
    sa.Column('implementation_scope', sa.Text(), nullable=True),
    sa.Column('has_implementation', sa.Boolean(), nullable=False),
    sa.Column('verification', sa.JSON(), nullable=False),
    sa.Column('survey_note', sa.Text(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('edited_via_api', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], ),
    sa.ForeignKeyConstraint(['citekey'], ['references.citekey'], ),
    sa.ForeignKeyConstraint(['subcategory_id'], ['categories.id'], ),
    sa.PrimaryKeyConstraint('slug')
    )
    with op.batch_alter_table('techniques', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_techniques_category_id'), ['category_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_techniques_citekey'), ['citekey'], unique=False)
        batch_op.create_index(batch_op.f('ix_techniques_has_implementation'), ['has_implementation'], unique=False)
        batch_op.create_index(batch_op.f('ix_techniques_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_techniques_subcategory_id'), ['subcategory_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_techniques_year'), ['year'], unique=False)

    op.create_table('technique_applications',
    sa.Column('technique_slug', sa.String(length=96), nullable=False),
    sa.Column('tag', sa.String(length=96), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['tag'], ['applications.tag'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['technique_slug'], ['techniques.slug'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('technique_slug', 'tag')
    )
    with op.batch_alter_table('technique_applications', schema=None) as batch_op:
        batch_op.create_index('ix_technique_applications_tag', ['tag'], unique=False)

    op.create_table('technique_related',
    sa.Column('technique_slug', sa.String(length=96), nullable=False),
    sa.Column('related_slug', sa.String(length=96), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['related_slug'], ['techniques.slug'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['technique_slug'], ['techniques.slug'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('technique_slug', 'related_slug')
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE technique_fts USING fts5(slug UNINDEXED, name, aliases, summary, "
                   "strengths, limitations, applications, tokenize='porter unicode61')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS technique_fts")
    op.drop_table('technique_related')
    with op.batch_alter_table('technique_applications', schema=None) as batch_op:
        batch_op.drop_index('ix_technique_applications_tag')

    op.drop_table('technique_applications')
    with op.batch_alter_table('techniques', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_techniques_year'))
        batch_op.drop_index(batch_op.f('ix_techniques_subcategory_id'))
        batch_op.drop_index(batch_op.f('ix_techniques_name'))
        batch_op.drop_index(batch_op.f('ix_techniques_has_implementation'))
        batch_op.drop_index(batch_op.f('ix_techniques_citekey'))
        batch_op.drop_index(batch_op.f('ix_techniques_category_id'))

    op.drop_table('techniques')
    op.drop_table('references')
    op.drop_table('meta')
    with op.batch_alter_table('categories', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_categories_parent_id'))

    op.drop_table('categories')
    op.drop_table('applications')
