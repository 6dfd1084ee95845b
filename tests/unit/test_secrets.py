from __future__ import annotations

import re

from api.auth import secrets


class TestSecrets:
    def test_live_and_test_formats(self):
        live = secrets.generate_secret(test=False)
        test = secrets.generate_secret(test=True)
        assert re.fullmatch(r"qlk_live_[0-9A-Za-z]{43}", live)
        assert re.fullmatch(r"qlk_test_[0-9A-Za-z]{43}", test)

    def test_secrets_are_unique(self):
        assert len({secrets.generate_secret(test=False) for _ in range(1000)}) == 1000

    def test_body_carries_at_least_32_random_bytes(self):
        assert 62**43 >= 256**32
        # The largest 32-byte value still fits the fixed width.
        assert len(secrets._base62(b"\xff" * 32)) == 43
        assert secrets._base62(b"\x00" * 32) == "0" * 43

    def test_hash_depends_on_pepper(self):
        secret = secrets.generate_secret(test=False)
        one = secrets.hash_secret(secrets.derive_pepper("a" * 32), secret)
        two = secrets.hash_secret(secrets.derive_pepper("b" * 32), secret)
        assert one != two
        assert len(one) == 64
        assert one == secrets.hash_secret(secrets.derive_pepper("a" * 32), secret)

    def test_display_parts(self):
        secret = "qlk_live_" + "A" * 39 + "wxyz"
        assert secrets.display_parts(secret) == ("qlk_live_AAAA", "wxyz")

    def test_looks_like_secret(self):
        assert secrets.looks_like_secret(secrets.generate_secret(test=True))
        assert not secrets.looks_like_secret("sk-abc")
        assert not secrets.looks_like_secret("qlk_live_" + "a" * 300)
