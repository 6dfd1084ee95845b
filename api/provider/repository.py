from __future__ import annotations

from typing import Any

from api.kit.repository import TenantRepository
from api.provider.models import ProviderCredential


class ProviderCredentialRepository(TenantRepository[ProviderCredential]):
    model = ProviderCredential

    async def all(self) -> list[ProviderCredential]:
        result: Any = await self.session.execute(self.base().order_by(ProviderCredential.provider))
        return list(result.scalars())

    async def by_provider(self, provider: str) -> ProviderCredential | None:
        result: Any = await self.session.execute(
            self.base().where(ProviderCredential.provider == provider)
        )
        found: ProviderCredential | None = result.scalars().first()
        return found

    def add(self, credential: ProviderCredential) -> None:
        self.session.add(credential)

    async def delete(self, credential: ProviderCredential) -> None:
        await self.session.delete(credential)
        await self.session.flush()
