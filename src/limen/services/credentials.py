"""Password hashes and TOTP devices, kept apart from the user record.

Keys: /users/NAME/pwd and /users/NAME/mfa/totp. `limen get users` never reads them.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from pydantic import BaseModel

from limen.backend.base import Backend, Item
from limen.errors import CompareFailed, NotFound


class TOTPDevice(BaseModel):
    name: str = "otp"
    secret: str
    added: datetime
    # The last 30-second step accepted: a code may never be used twice.
    last_step: int = 0


class CredentialStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @staticmethod
    def _pwd_key(user: str) -> str:
        return f"/users/{user}/pwd"

    @staticmethod
    def _totp_key(user: str) -> str:
        return f"/users/{user}/mfa/totp"

    async def password_hash(self, user: str) -> bytes | None:
        try:
            return (await self.backend.get(self._pwd_key(user))).value
        except NotFound:
            return None

    async def set_password_hash(self, user: str, hashed: bytes) -> None:
        await self.backend.put(Item(key=self._pwd_key(user), value=hashed))

    async def totp_device(self, user: str) -> tuple[TOTPDevice, Item] | None:
        try:
            item = await self.backend.get(self._totp_key(user))
        except NotFound:
            return None
        return TOTPDevice.model_validate_json(item.value), item

    async def set_totp_device(self, user: str, device: TOTPDevice) -> None:
        await self.backend.put(
            Item(key=self._totp_key(user), value=device.model_dump_json().encode())
        )

    async def consume_step(self, user: str, item: Item, device: TOTPDevice, step: int) -> bool:
        """Record `step` as used; False when it (or a later one) was already used."""
        if step <= device.last_step:
            return False
        updated = device.model_copy(update={"last_step": step})
        try:
            await self.backend.compare_and_swap(
                item, Item(key=item.key, value=updated.model_dump_json().encode())
            )
        except CompareFailed:
            return False
        return True

    async def clear(self, user: str) -> None:
        """Forget the password and every second factor at once."""
        for key in (self._pwd_key(user), self._totp_key(user)):
            with contextlib.suppress(NotFound):
                await self.backend.delete(key)
