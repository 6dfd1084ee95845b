from __future__ import annotations

from api.alert.models import Alert
from api.kit.repository import TenantRepository


class AlertRepository(TenantRepository[Alert]):
    model = Alert
