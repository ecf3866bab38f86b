"""intent lifecycle monitoring closed sent

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 00:07:05.277443

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import trading_pipelines.ledger.models


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """FILLED is split: an entry whose order filled is MONITORING (the next reconcile closes it
    if its position is closed, with the realized P&L); a filled exit is CLOSED. Data only."""
    op.execute("UPDATE intents SET status = 'MONITORING' WHERE status = 'FILLED' AND kind = 'entry'")
    op.execute("UPDATE intents SET status = 'CLOSED' WHERE status = 'FILLED' AND kind <> 'entry'")


def downgrade() -> None:
    """MONITORING and CLOSED become FILLED again; SENT, which FILLED never meant, stays."""
    op.execute("UPDATE intents SET status = 'FILLED' WHERE status IN ('MONITORING', 'CLOSED')")
